package authority_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
)

// Issue 15: a code typed by the wrong account was burned: the device waited
// ten minutes for expired_token and the real owner was told "unknown or
// expired". Now the wrong account is told the device is another account's,
// before anything is spent; the device keeps polling (pending, not denied);
// the owner's account approves with the same code.
func TestPairingCodeOfAnotherAccountsDevice(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	d.pair(t, "alice")
	dc, uc := d.start(t) // paired to alice, asking again (a reset, a lost token)

	if _, err := f.a.LookupPairing(uc, "bob"); !errors.Is(err, authority.ErrPairedElsewhere) {
		t.Fatalf("bob looks the code up: %v, want ErrPairedElsewhere", err)
	}
	if msg := authority.UserCodeMessage(authority.ErrPairedElsewhere); !strings.Contains(msg, "paired to another account") {
		t.Fatalf("the page's message: %q", msg)
	}
	for _, approve := range []bool{true, false} {
		if err := f.a.DecidePairing(uc, "bob", approve); !errors.Is(err, authority.ErrPairedElsewhere) {
			t.Fatalf("bob decides (approve %v): %v, want ErrPairedElsewhere", approve, err)
		}
	}
	if code, m := d.poll(dc); code != 400 || m["error"] != "authorization_pending" {
		t.Fatalf("the device's poll after bob's tries: %d %v, want authorization_pending", code, m)
	}
	// On the code page bob is told whose it is not, and the code lives on.
	bob := f.webUser("bob")
	if code, body, _ := bob.get("/device?user_code=" + url.QueryEscape(uc)); code != 404 || !strings.Contains(body, "paired to another account") {
		t.Fatalf("bob's code page: %d, want 404 saying the device is paired to another account\n%s", code, body)
	}
	if !strings.Contains(f.logs.String(), "pairing code entered by another account") {
		t.Error("the wrong account's attempt is not logged")
	}
	p, err := f.a.LookupPairing(uc, "alice")
	if err != nil || p.Device.ID != "speaker-1" {
		t.Fatalf("alice looks the code up: %+v %v", p, err)
	}
	if err := f.a.DecidePairing(uc, "alice", true); err != nil {
		t.Fatalf("alice approves: %v", err)
	}
	code, m := d.poll(dc)
	if code != 200 || decodeClaims(t, m["access_token"].(string))["sub"] != "alice" {
		t.Fatalf("the device's poll after alice approved: %d %v", code, m)
	}
	// Spent now, for everyone.
	if err := f.a.DecidePairing(uc, "alice", true); !errors.Is(err, authority.ErrUserCode) {
		t.Fatalf("the code again: %v, want ErrUserCode", err)
	}
	if msg := authority.UserCodeMessage(authority.ErrUserCode); strings.Contains(msg, "another account") {
		t.Fatalf("an unknown code's message tells more: %q", msg)
	}
}

// A device nobody owns is paired by whoever has its code, as before; one
// account's denial ends the pairing at once (access_denied).
func TestPairingCodeOfUnownedDevice(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	dc, uc := d.start(t)
	if err := f.a.DecidePairing(uc, "bob", false); err != nil {
		t.Fatalf("bob denies: %v", err)
	}
	if code, m := d.poll(dc); code != 400 || m["error"] != "access_denied" {
		t.Fatalf("poll after the denial: %d %v", code, m)
	}
}
