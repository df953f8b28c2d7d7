package authority_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// Sessions: nothing stored before a login; expired ones deleted.

func sessions(t *testing.T, f *fixture) int {
	t.Helper()
	n := 0
	if err := f.a.Store.ListDocs("web-session", func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWebAnonymousVisitsStoreNoSession(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.a.RegisterOwner("alice", "alice@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	// Cookie-less views of every anonymous page, and of pages that send
	// to the login.
	anon := f.browser().noRedirects()
	for i := 0; i < 20; i++ {
		anon.c.Jar = nil
		for _, path := range []string{"/", "/login", "/register", "/devices", "/device?user_code=BCDF-GHJK", "/shares"} {
			if code, _, _ := anon.get(path); code != 200 && code != 303 {
				t.Fatalf("GET %s: %d", path, code)
			}
		}
	}
	if n := sessions(t, f); n != 0 {
		t.Fatalf("%d sessions stored for anonymous visitors, want none", n)
	}
	// The anonymous forms still work (their CSRF token is the signed
	// cookie's), a login stores one session, a logout deletes it.
	b := f.browser().noRedirects()
	_, _, csrf := b.get("/login")
	if resp, body := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {webPassword}}); resp.StatusCode != 303 {
		t.Fatalf("login: %d\n%s", resp.StatusCode, body)
	}
	if n := sessions(t, f); n != 1 {
		t.Fatalf("after a login: %d sessions, want 1", n)
	}
	csrf = b.csrf()
	if resp, _ := b.do("POST", "/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != 303 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if n := sessions(t, f); n != 0 {
		t.Fatalf("after the logout: %d sessions, want 0", n)
	}
	// The logged-out browser is anonymous again and can log in again.
	_, _, csrf = b.get("/login")
	if resp, _ := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {webPassword}}); resp.StatusCode != 303 {
		t.Fatalf("login again: %d", resp.StatusCode)
	}
}

// The anonymous CSRF token is bound to its cookie: without the cookie, or
// with another browser's cookie, it is refused.
func TestAnonymousCSRFTokenNeedsItsCookie(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b := f.browser()
	_, _, csrf := b.get("/register")
	form := url.Values{"csrf": {csrf}, "username": {"mallory"}, "email": {"m@example.com"}, "password": {"long enough password"}}
	bare := f.browser()
	if code, _ := bare.post("/register", form); code != 403 {
		t.Fatalf("token without its cookie: %d, want 403", code)
	}
	other := f.browser()
	other.get("/register")
	if code, _ := other.post("/register", form); code != 403 {
		t.Fatalf("token with another browser's cookie: %d, want 403", code)
	}
	// The key signing the tokens is in the store: another server of the
	// same authority (a restart) accepts them.
	b.base = site(t, f, authority.DefaultLimits()).URL
	if code, body := b.post("/register", form); code != 200 {
		t.Fatalf("token at another server of the authority: %d\n%s", code, body)
	}
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestWebExpiredSessionsAreDeleted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	past := time.Now().Add(-time.Minute)
	type doc struct {
		User    string    `json:"user"`
		CSRF    string    `json:"csrf"`
		Expires time.Time `json:"expires"`
	}
	// Sessions that expired and were never read again, and one still live.
	for _, id := range []string{"old-1", "old-2", "old-3"} {
		if err := f.a.Store.PutDoc("web-session", hashHex(id), doc{User: "alice", CSRF: "c", Expires: past}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.a.Store.PutDoc("web-session", hashHex("live"), doc{User: "alice", CSRF: "c", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.RegisterOwner("alice", "alice@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	// Read: an expired session sends to the login, is deleted and its
	// cookie cleared.
	b := f.browser().noRedirects()
	u, _ := url.Parse(f.srv.URL)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "edgeid_session", Value: "old-1"}})
	resp, _ := b.do("GET", "/devices", nil)
	if resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("expired session: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var s doc
	if err := f.a.Store.GetDoc("web-session", hashHex("old-1"), &s); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired session read and kept: %v", err)
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || (c.Name == "edgeid_session" && c.MaxAge < 0)
	}
	if !cleared {
		t.Error("the expired session's cookie is not cleared")
	}
	// Sweep: a login deletes those never read again; the live one stays.
	_, _, csrf := b.get("/login")
	if resp, _ := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {webPassword}}); resp.StatusCode != 303 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	for _, id := range []string{"old-2", "old-3"} {
		if err := f.a.Store.GetDoc("web-session", hashHex(id), &s); err == nil {
			t.Errorf("expired session %s not swept", id)
		}
	}
	if err := f.a.Store.GetDoc("web-session", hashHex("live"), &s); err != nil {
		t.Errorf("the live session was swept: %v", err)
	}
	if n := sessions(t, f); n != 2 { // the live one and the login's
		t.Errorf("%d sessions after the sweep, want 2", n)
	}
}
