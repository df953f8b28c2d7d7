package authority_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// Failed logins: counted per (account, address), per account and per
// address, in the store.

// site serves f's authority with limits l on a server of its own (the
// fixture's asks for client certificates; these tests need none).
func site(t *testing.T, f *fixture, l authority.Limits) *httptest.Server {
	t.Helper()
	h := authority.NewHandler(f.a, adminToken)
	h.SetLimits(l)
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// smallLogins are lockout thresholds a test reaches quickly.
func smallLogins() authority.Limits {
	l := authority.DefaultLimits()
	l.LoginPerAccountAddress, l.LoginPerAccount, l.LoginPerAddress = 3, 5, 8
	return l
}

// tryLogin posts a login of name from b and returns the status and, for
// 429, Retry-After in seconds.
func (b *browser) tryLogin(name, password string) (int, int) {
	b.t.Helper()
	_, _, csrf := b.get("/login")
	resp, _ := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {name}, "password": {password}})
	ra, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	return resp.StatusCode, ra
}

func TestLoginLockoutPerAccountAndAddress(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := f.a.RegisterOwner(u, u+"@example.com", webPassword); err != nil {
			t.Fatal(err)
		}
	}
	srv := site(t, f, smallLogins())
	at := func(ip string) *browser { return f.browserAt(srv.URL, ip).noRedirects() }
	a1, a2, a3, a4 := at("127.0.0.1"), at("127.0.0.2"), at("127.0.0.3"), at("127.0.0.4")

	// Three wrong passwords for alice from one address lock alice there:
	// even the right password waits, told for how long.
	for i := 0; i < 3; i++ {
		if code, _ := a1.tryLogin("alice", "wrong password!"); code != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, code)
		}
	}
	if code, ra := a1.tryLogin("alice", webPassword); code != 429 || ra < 14*60 || ra > 15*60 {
		t.Fatalf("right password while alice is locked at this address: %d Retry-After %d, want 429 and 900 s", code, ra)
	}
	// Another account behind the same address logs in.
	if code, _ := a1.tryLogin("bob", webPassword); code != 303 {
		t.Fatalf("bob from the address where alice failed: %d, want 303", code)
	}
	// Alice logs in from elsewhere: the account is not locked.
	if code, _ := a2.tryLogin("alice", webPassword); code != 303 {
		t.Fatalf("alice from another address: %d, want 303", code)
	}
	// Guessing alice from several addresses locks the account everywhere
	// (5 failures of the account: 3 from a1, 2 from a2).
	for i := 0; i < 2; i++ {
		if code, _ := a2.tryLogin("alice", "wrong password!"); code != 401 {
			t.Fatalf("failure from a2: %d", code)
		}
	}
	if code, _ := a3.tryLogin("alice", webPassword); code != 429 {
		t.Fatalf("alice after 5 failures from 2 addresses, from a third: %d, want 429", code)
	}
	// Spraying many accounts from one address locks that address, for
	// every account; the others' addresses are not affected.
	for i := 0; i < 8; i++ {
		if code, _ := a4.tryLogin(fmt.Sprintf("user%d", i), "password123!"); code != 401 {
			t.Fatalf("spray %d: %d", i, code)
		}
	}
	if code, _ := a4.tryLogin("carol", webPassword); code != 429 {
		t.Fatalf("carol from the spraying address: %d, want 429", code)
	}
	if code, _ := a3.tryLogin("carol", webPassword); code != 303 {
		t.Fatalf("carol from another address: %d, want 303", code)
	}
	if !strings.Contains(f.logs.String(), "too many failed attempts") || strings.Contains(f.logs.String(), "wrong password!") {
		t.Error("lockouts not logged, or a password was")
	}
	// The counters are store documents, with their expiry.
	n := 0
	if err := f.a.Store.ListDocs("login-failures", func(string, []byte) error { n++; return nil }); err != nil || n == 0 {
		t.Fatalf("login counters in the store: %d %v", n, err)
	}
}

// A restart of the authority keeps a lock.
func TestLoginLockoutSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var stop func()
	open := func() (*authority.Authority, *httptest.Server) {
		st, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		a, err := authority.New(authority.Config{URL: "https://authority.test", TokenAudience: "edgeid", TokenTTL: time.Hour,
			MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}, st, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		h := authority.NewHandler(a, adminToken)
		h.SetLimits(smallLogins())
		srv := httptest.NewTLSServer(h)
		stop = func() { srv.Close(); a.Close(); _ = st.Close() }
		return a, srv
	}
	t.Cleanup(func() { stop() })
	a, srv := open()
	if err := a.RegisterOwner("alice", "alice@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, a: a, srv: srv}
	b := f.browserAt(srv.URL, "127.0.0.1").noRedirects()
	for i := 0; i < 3; i++ {
		b.tryLogin("alice", "wrong password!")
	}
	if code, _ := b.tryLogin("alice", webPassword); code != 429 {
		t.Fatalf("before the restart: %d, want 429", code)
	}
	stop() // the restart: a new process would find only the store
	a, srv = open()
	f.a, f.srv = a, srv
	b = f.browserAt(srv.URL, "127.0.0.1").noRedirects()
	if code, ra := b.tryLogin("alice", webPassword); code != 429 || ra < 60 {
		t.Fatalf("after the restart: %d Retry-After %d, want 429 still locked", code, ra)
	}
	if code, _ := f.browserAt(srv.URL, "127.0.0.2").noRedirects().tryLogin("alice", webPassword); code != 303 {
		t.Fatalf("after the restart, from another address: %d, want 303", code)
	}
}

// Login errors are beside their field; the username typed stays, the
// password never comes back.
func TestLoginErrorsBesideTheirField(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.a.RegisterOwner("alice", "alice@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	_, _, csrf := b.get("/login")
	resp, body := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"Alice "}, "password": {"not her password"}})
	if resp.StatusCode != 401 || fieldError(body, "", "password") != "Wrong username or password." {
		t.Fatalf("wrong password: %d\n%s", resp.StatusCode, body)
	}
	if inputValue(body, "username") != "alice" || inputValue(body, "password") != "" || strings.Contains(body, "not her password") {
		t.Fatalf("typed values on the page again:\n%s", body)
	}
	if !strings.Contains(body, `aria-describedby="error-password"`) {
		t.Error("the password input does not point at its error")
	}
}

// A lock says how long it lasts, in the page and in Retry-After.
func TestLoginLockoutPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv := site(t, f, smallLogins())
	b := f.browserAt(srv.URL, "127.0.0.1")
	for i := 0; i < 3; i++ {
		b.tryLogin("nobody", "wrong password!")
	}
	_, _, csrf := b.get("/login")
	resp, body := b.do("POST", "/login", url.Values{"csrf": {csrf}, "username": {"nobody"}, "password": {"x"}})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "900" || !strings.Contains(body, "Try again in 15 minutes") ||
		inputValue(body, "username") != "nobody" {
		t.Fatalf("locked: %d Retry-After %q\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}
