package authority_test

import (
	"context"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/store"
)

// enrollAt enrolls a gateway called name that serves site.
func (f *fixture) enrollAt(name, site string) {
	f.t.Helper()
	code, _, err := f.a.AddSiteGateway(name, site, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := client.Enroll(context.Background(), f.srv.URL, f.fp, code, "test-board"); err != nil {
		f.t.Fatal(err)
	}
}

// A device paired through a gateway follows its owner's gateway: the first
// relayed pairing gives the owner a home site, and later pairings put the
// device there, whichever gateway relays them.
func TestRelayedPairingFollowsTheOwnersGateway(t *testing.T) {
	f := newFixture(t)
	f.classes()
	if err := f.a.RegisterOwner("alice", "alice@example.com", "a long enough password"); err != nil {
		t.Fatal(err)
	}
	f.keyDevice("r-1")
	f.keyDevice("r-2")
	f.enrollAt("gw-home", "home")
	f.enrollAt("gw-cabin", "cabin")
	pair := func(gw, dev string) store.Device {
		t.Helper()
		da, err := f.a.RelayStart(gw, dev)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.a.DecidePairing(da.UserCode, "alice", true); err != nil {
			t.Fatal(err)
		}
		d, err := f.a.Store.Device(dev)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := pair("gw-home", "r-1"); d.Site != "home" || d.Owner != "alice" {
		t.Errorf("relayed by gw-home: owner %q site %q, want alice at home", d.Owner, d.Site)
	}
	if u, _ := f.a.Store.User("alice"); u.Site != "home" {
		t.Errorf("alice's home site = %q, want home (her first gateway's)", u.Site)
	}
	if d := pair("gw-cabin", "r-2"); d.Site != "home" {
		t.Errorf("relayed by gw-cabin for alice of home: site %q, want her home site", d.Site)
	}
}

func TestMoveDeviceAndSiteGatewaysValidated(t *testing.T) {
	f := newFixture(t)
	f.classes()
	f.keyDevice("m-1")
	for _, c := range []struct {
		path, body string
		want       int
		says       string
	}{
		{"/admin/v1/devices/m-1/site", `{"site": "*"}`, 400, "site"},
		{"/admin/v1/devices/m-1/site", `{"site": "a b"}`, 400, "without spaces"},
		{"/admin/v1/devices/m-1/site", `{}`, 400, "puts the device at every site"},
		{"/admin/v1/devices/nobody/site", `{"site": "x"}`, 404, "no device"},
		{"/admin/v1/gateways", `{"name": "gw-1", "site": "a/b"}`, 400, "site"},
	} {
		code, body := f.do("POST", c.path, adminToken, "application/json", c.body, nil)
		if code != c.want || !strings.Contains(body, c.says) {
			t.Errorf("POST %s %s = %d %s, want %d saying %q", c.path, c.body, code, body, c.want, c.says)
		}
	}
	if d, _ := f.a.Store.Device("m-1"); d.Site != "" {
		t.Errorf("a refused move changed the site to %q", d.Site)
	}
	if code, body := f.do("POST", "/admin/v1/devices/m-1/site", adminToken, "application/json", `{"site": "plant-7"}`, nil); code != 200 {
		t.Fatalf("move: %d %s", code, body)
	}
	if d, _ := f.a.Store.Device("m-1"); d.Site != "plant-7" {
		t.Errorf("after the move the site is %q, want plant-7", d.Site)
	}
}
