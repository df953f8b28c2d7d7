package enforce_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/enforce"
	"github.com/edgeid/edgeid/store"
)

// A change to shares re-checks exactly the requesting parties' sessions it
// concerns.
func TestAppliedShares(t *testing.T) {
	rpt := func(sub string, perms ...authn.Permission) *authn.Claims {
		return &authn.Claims{ClientID: sub + "-phone", Subject: sub, Permissions: append([]authn.Permission{}, perms...)}
	}
	newFront := func() *fake {
		return &fake{ps: map[string]enforce.Principal{
			"bob":    {Device: "bob-phone", Claims: rpt("bob", authn.Permission{ResourceID: "thermo-1/telemetry", Share: "s1"})},
			"carol":  {Device: "carol-phone", Claims: rpt("carol", authn.Permission{ResourceID: "thermo-2/status", Share: "s2"})},
			"dave":   {Device: "dave-phone", Claims: rpt("dave")}, // an RPT presenting nothing (yet)
			"device": {Device: "thermo-1", Claims: &authn.Claims{ClientID: "thermo-1", Subject: "alice"}},
			"cert":   {Device: "thermo-2"},
		}}
	}
	for _, c := range []struct {
		name string
		b    store.Batch
		want string
	}{
		{"a share changed", store.Batch{Grants: []store.Grant{{ID: "s1"}}}, "bob"},
		{"a share deleted", store.Batch{Delete: store.Deletions{Grants: []string{"s2"}}}, "carol"},
		{"a shared device changed", store.Batch{Devices: []store.Device{{ID: "thermo-1"}}}, "device,bob"},
		{"a shared device deleted", store.Batch{Delete: store.Deletions{Devices: []string{"thermo-2"}}}, "cert,carol"},
		{"a user changed (a sharing owner, maybe)", store.Batch{Users: []store.User{{ID: "alice"}}}, "device,bob,carol,dave"},
		{"an unrelated share", store.Batch{Grants: []store.Grant{{ID: "s9"}}}, ""},
	} {
		f := newFront()
		enforce.New(slog.New(slog.NewTextHandler(io.Discard, nil)), f).Applied(store.Applied{Batch: &c.b})
		if got := strings.Join(f.checked, ","); got != c.want {
			t.Errorf("%s: re-checked %q, want %q", c.name, got, c.want)
		}
		if len(f.ended) != 0 {
			t.Errorf("%s: ended %v", c.name, f.ended)
		}
	}
	f := newFront()
	enforce.New(slog.New(slog.NewTextHandler(io.Discard, nil)), f).RecheckShares()
	if got := strings.Join(f.checked, ","); got != "bob,carol,dave" {
		t.Errorf("RecheckShares re-checked %q, want the RPT sessions", got)
	}
}
