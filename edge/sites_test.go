package edge_test

import (
	"crypto/tls"
	"slices"
	"testing"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// Gateways of a site hold that site's devices and owners only, and a device
// moved to another site leaves the old site's gateways, which end its
// session, and arrives at the new site's with its owner (issue 16, sites).
func TestSitesFeedTheirOwnRecords(t *testing.T) {
	x := startAuthority(t)
	files, err := demo.WriteTLS(t.TempDir(), "factory-7")
	if err != nil {
		t.Fatal(err)
	}
	batch := store.Batch{Classes: demo.Classes(),
		Users: []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive}},
		Devices: []store.Device{
			{ID: "factory-7", Class: "thermostat", Status: store.DeviceActive, Owner: "alice", Site: "home-a", CertSHA256: files.DeviceFingerprint},
			{ID: "bobs-1", Class: "thermostat", Status: store.DeviceActive, Owner: "bob", Site: "home-b"},
		}}
	x.admin("POST", "/admin/v1/import", batch)

	gwA := startGateway(t, func(c *configT) {
		c.StateDir = t.TempDir()
		c.Sync.Enrollment = testenv.EnrollSite(t, x.a, x.srv.URL, x.fp, "gw-a", "home-a", "test-board")
	})
	gwB := startGateway(t, func(c *configT) {
		c.StateDir = t.TempDir()
		c.Sync.Enrollment = testenv.EnrollSite(t, x.a, x.srv.URL, x.fp, "gw-b", "home-b", "test-board")
	})
	held := func(g *gw) (devices, users []string) {
		ds, _ := g.g.Store.Devices()
		us, _ := g.g.Store.Users()
		for _, d := range ds {
			devices = append(devices, d.ID)
		}
		for _, u := range us {
			users = append(users, u.ID)
		}
		slices.Sort(devices)
		slices.Sort(users)
		return devices, users
	}
	waitFor(t, "each site's records at its gateway", func() bool {
		da, ua := held(gwA)
		db, ub := held(gwB)
		return slices.Equal(da, []string{"factory-7"}) && slices.Equal(ua, []string{"alice"}) &&
			slices.Equal(db, []string{"bobs-1"}) && slices.Equal(ub, []string{"bob"})
	})
	if cs, _ := gwB.g.Store.Classes(); len(cs) != len(demo.Classes()) {
		t.Errorf("site B holds %d classes, want every class (%d)", len(cs), len(demo.Classes()))
	}

	cert, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	dev := gwA.mustConnect(connOpts{tls: true, cert: &cert, clientID: "factory-7"})
	if code, _ := gwB.connect(connOpts{tls: true, cert: &cert, clientID: "factory-7"}); code == 0 {
		t.Fatalf("site B's gateway accepted a device of site A")
	}

	x.admin("POST", "/admin/v1/devices/factory-7/site", map[string]string{"site": "home-b"})
	if code := dev.expectDisconnect(t); code == 0 {
		t.Errorf("the moved device's session at site A ended with code 0")
	}
	waitFor(t, "the device and its owner to move from site A to site B", func() bool {
		da, ua := held(gwA)
		db, ub := held(gwB)
		return len(da) == 0 && len(ua) == 0 &&
			slices.Equal(db, []string{"bobs-1", "factory-7"}) && slices.Equal(ub, []string{"alice", "bob"})
	})
	gwB.mustConnect(connOpts{tls: true, cert: &cert, clientID: "factory-7"})
	if code, _ := gwA.connect(connOpts{tls: true, cert: &cert, clientID: "factory-7"}); code == 0 {
		t.Errorf("site A's gateway still accepts the device moved to site B")
	}
}
