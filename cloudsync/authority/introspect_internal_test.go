package authority

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Issue 15: introspection ignored the store's errors when it read the
// revocations, and answered active=true for a token it could not check.
// Every lookup that fails must make the token inactive.
func TestIntrospectFailsClosedOnStoreError(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{URL: "https://authority.test", TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); st.Close() })
	if _, err := a.Apply(&store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive}}}, "test"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := a.signUntil(map[string]any{"sub": "owner-1", "client_id": "dev-1", "scope": "publish:x"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if m := a.Introspect(tok); m["active"] != true {
		t.Fatalf("a fresh token: %v", m)
	}
	for _, failing := range []store.RevocationKind{store.RevokeToken, store.RevokeDevice, store.RevokeSubject} {
		a.revocation = func(kind store.RevocationKind, value string) (store.Revocation, bool, error) {
			if kind == failing {
				return store.Revocation{}, false, errors.New("disk on fire")
			}
			return st.Revocation(kind, value)
		}
		if m := a.Introspect(tok); m["active"] != false || len(m) != 1 {
			t.Errorf("%s revocation unreadable: %v, want only active=false", failing, m)
		}
	}
	a.revocation = st.Revocation
	if m := a.Introspect(tok); m["active"] != true {
		t.Fatalf("store readable again: %v", m)
	}
}
