package authority

import (
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// A claim token or a protection API token whose revocations cannot be read
// is refused with a store error (server_error, no token), never taken.
func TestUMAFailsClosedOnStoreError(t *testing.T) {
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
	if _, err := a.Apply(&store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "bob", Status: store.UserActive}},
		Devices: []store.Device{{ID: "svc-1", Class: "app", Status: store.DeviceActive}}}, "test"); err != nil {
		t.Fatal(err)
	}
	d, _ := st.Device("svc-1")
	tok, _, err := a.signUntil(map[string]any{"sub": "bob", "client_id": "svc-1", "scope": ""}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	q := umaRequest{claimToken: tok, claimTokenFormat: ClaimTokenJWT}
	if party, _, _, err := a.requestingParty(d, nil, "", q); err != nil || party != "bob" {
		t.Fatalf("store readable: %q %v", party, err)
	}
	patReq := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "https://authority.test/uma/resource_set", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		NewHandler(a, "x").ServeHTTP(w, r)
		return w
	}
	if w := patReq(); w.Code != 200 {
		t.Fatalf("PAT, store readable: %d %s", w.Code, w.Body)
	}
	for _, failing := range []store.RevocationKind{store.RevokeToken, store.RevokeDevice, store.RevokeSubject} {
		a.revocation = func(kind store.RevocationKind, value string) (store.Revocation, bool, error) {
			if kind == failing {
				return store.Revocation{}, false, errors.New("disk on fire")
			}
			return st.Revocation(kind, value)
		}
		_, _, _, err := a.requestingParty(d, nil, "", q)
		var oe *OAuthError
		if err == nil || errors.As(err, &oe) {
			t.Errorf("claim token, %s revocation unreadable: %v, want a store error", failing, err)
		}
		if w := patReq(); w.Code != 500 {
			t.Errorf("PAT, %s revocation unreadable: %d %s, want 500", failing, w.Code, w.Body)
		}
	}
}
