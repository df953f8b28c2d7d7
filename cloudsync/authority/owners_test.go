package authority_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// An owner made by RegisterOwner logs in on the pages with that password,
// and is a user record in the feed; bad inputs name their field and store
// nothing; a taken name is refused.
func TestRegisterOwner(t *testing.T) {
	f := newFixture(t)
	const pw = "a demo password"
	if err := f.a.RegisterOwner(" Alice ", "alice@example.com", pw); err != nil {
		t.Fatal(err)
	}
	u, err := f.a.Store.User("alice")
	if err != nil || u.Status != store.UserActive {
		t.Fatalf("user record: %+v %v", u, err)
	}
	b := f.browser()
	_, _, csrf := b.get("/login")
	code, body := b.post("/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {pw}})
	if code != 200 || !strings.Contains(body, `id="none"`) {
		t.Fatalf("login with the registered password: %d\n%s", code, body)
	}
	other := f.browser()
	_, _, csrf = other.get("/login")
	if code, body := other.post("/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"wrong password"}}); code != 401 || !strings.Contains(body, "Wrong username or password") {
		t.Fatalf("a wrong password: %d, want 401\n%s", code, body)
	}

	if err := f.a.RegisterOwner("alice", "other@example.com", "another password"); !errors.Is(err, authority.ErrOwnerTaken) {
		t.Fatalf("taken name: %v, want ErrOwnerTaken", err)
	}
	err = f.a.RegisterOwner("B", "nope", "short")
	for _, want := range []string{"username:", "email:", "password:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad inputs: %v, want an error naming %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "short") {
		t.Errorf("the error quotes the password: %v", err)
	}
	if _, err := f.a.Store.User("b"); err == nil {
		t.Fatal("an invalid registration created a user")
	}
	if strings.Contains(f.logs.String(), pw) {
		t.Fatal("the password reached the log")
	}
}
