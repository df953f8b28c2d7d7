package authn_test

import (
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// shareStore holds alice's thermostats, bob's phone app and shares of alice's.
func shareStore(t *testing.T, grants ...store.Grant) *store.Store {
	t.Helper()
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := &store.Batch{Classes: demo.Classes(),
		Users: []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive}},
		Devices: []store.Device{
			{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
			{ID: "thermo-2", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
			{ID: "bob-phone", Class: "app", Owner: "bob", Status: store.DeviceActive},
		}, Grants: grants}
	if _, err := st.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

func telemetryShare(id, grantee string) store.Grant {
	return store.Grant{ID: id, Owner: "alice", Device: "thermo-1", Grantee: grantee, GranteeKind: store.GranteeUser,
		Resources: []store.SharedResource{{Device: "thermo-1", Group: "telemetry", Scopes: []string{"sub"}}}}
}

func rpt(perms ...authn.Permission) *authn.Claims {
	return &authn.Claims{Subject: "bob", ClientID: "bob-phone", Permissions: perms}
}

var telemetryPerm = authn.Permission{ResourceID: "thermo-1/telemetry", Scopes: []string{"sub"}, Share: "s1"}

func TestSharesGrantExactlyTheSharedTopics(t *testing.T) {
	st := shareStore(t, telemetryShare("s1", "bob"))
	a := &authn.Authenticator{Store: st}
	d, _ := st.Device("bob-phone")
	c := rpt(telemetryPerm)
	c.Scope = mustCompile(t)
	perms, err := a.Permissions(d, c, "bob-phone")
	if err != nil {
		t.Fatal(err)
	}
	wantSubscribe(t, "RPT", perms, map[string]bool{
		"devices/thermo-1/telemetry/temp": true, "devices/thermo-1/telemetry/#": true,
		"devices/thermo-1/commands/set": false, "devices/thermo-2/telemetry/temp": false, "devices/+/telemetry/#": false,
	})
	wantPublish(t, "RPT", perms, map[string]bool{"devices/thermo-1/telemetry/temp": false, "devices/thermo-1/commands/set": false})
}

func TestSharesRefuseWhatNoLongerStands(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	expired := telemetryShare("s1", "bob")
	expired.Expires = now.Add(-time.Minute)
	noScope := telemetryShare("s1", "bob")
	noScope.Resources[0].Group = "status"
	for _, c := range []struct {
		name  string
		grant []store.Grant
		perm  authn.Permission
	}{
		{"revoked", nil, telemetryPerm},
		{"made to carol", []store.Grant{telemetryShare("s1", "carol")}, telemetryPerm},
		{"expired", []store.Grant{expired}, telemetryPerm},
		{"resource no longer shared", []store.Grant{noScope}, telemetryPerm},
		{"scope not shared", []store.Grant{telemetryShare("s1", "bob")}, authn.Permission{ResourceID: "thermo-1/telemetry", Scopes: []string{"pub"}, Share: "s1"}},
		{"another resource", []store.Grant{telemetryShare("s1", "bob")}, authn.Permission{ResourceID: "thermo-2/telemetry", Scopes: []string{"sub"}, Share: "s1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := shareStore(t, c.grant...)
			a := &authn.Authenticator{Store: st, Now: func() time.Time { return now }}
			_, _, err := a.Shares(rpt(c.perm))
			wantReason(t, err, authn.ReasonShareRevoked)
		})
	}
	t.Run("device changed hands", func(t *testing.T) {
		st := shareStore(t, telemetryShare("s1", "bob"))
		if _, err := st.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Owner: "dave", Status: store.DeviceActive}}}, nil); err != nil {
			t.Fatal(err)
		}
		_, _, err := (&authn.Authenticator{Store: st}).Shares(rpt(telemetryPerm))
		wantReason(t, err, authn.ReasonShareRevoked)
	})
}

func TestSharesOutsideTheirWindowAreHeld(t *testing.T) {
	g := telemetryShare("s1", "bob")
	g.Window = &store.Window{From: "18:00", To: "20:00"}
	st := shareStore(t, g)
	now := time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC)
	a := &authn.Authenticator{Store: st, Now: func() time.Time { return now }}
	d, _ := st.Device("bob-phone")
	c := rpt(telemetryPerm)
	c.Scope = mustCompile(t)
	perms, err := a.Permissions(d, c, "bob-phone")
	if err != nil {
		t.Fatal(err)
	}
	if perms.CanSubscribe("devices/thermo-1/telemetry/temp") || !perms.Holds("devices/thermo-1/telemetry/#") {
		t.Errorf("at 17:00, a 18:00-20:00 share: want held, not allowed")
	}
	now = time.Date(2026, 12, 2, 18, 0, 0, 0, time.UTC)
	if perms, _ = a.Permissions(d, c, "bob-phone"); !perms.CanSubscribe("devices/thermo-1/telemetry/temp") {
		t.Errorf("at 18:00, a 18:00-20:00 share: want allowed")
	}
}

// mustCompile is an RPT's empty scope.
func mustCompile(t *testing.T) *policy.Set {
	t.Helper()
	s, err := policy.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
