package authority_test

import (
	"net/url"
	"testing"
)

// pair pairs d to owner (RFC 8628) and returns its first refresh token.
func (d *keyDevice) pair(t *testing.T, owner string) string {
	t.Helper()
	dc, uc := d.start(t)
	if err := d.f.a.DecidePairing(uc, owner, true); err != nil {
		t.Fatal(err)
	}
	code, m := d.poll(dc)
	if code != 200 || m["refresh_token"] == nil {
		t.Fatalf("poll after approval: %d %v", code, m)
	}
	return m["refresh_token"].(string)
}

// refresh spends rt; it returns the answer and the new refresh token.
func (d *keyDevice) refresh(rt string) (int, map[string]any, string) {
	code, m := d.post("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	next, _ := m["refresh_token"].(string)
	return code, m, next
}

// Issue 15, RFC 7009: revoking a refresh token answered 200 and the token
// went on working.
func TestRevokedRefreshTokenRefused(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	rt1 := d.pair(t, "alice")
	code, m, rt2 := d.refresh(rt1)
	if code != 200 || rt2 == "" {
		t.Fatalf("refresh: %d %v", code, m)
	}
	ctype := "application/x-www-form-urlencoded"
	if code, body := f.do("POST", "/oauth/revoke", adminToken, ctype, url.Values{"token": {rt2}, "token_type_hint": {"refresh_token"}}.Encode(), nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, m, _ := d.refresh(rt2); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("revoked refresh token: %d %v, want 400 invalid_grant", code, m)
	}
}

// Issue 15, RFC 9700 §4.14.2: a refresh token used again after it was
// rotated revokes its grant: the token rotated from it is refused too.
// Another grant is not touched.
func TestRefreshTokenReuseRevokesGrant(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	other := f.keyDevice("speaker-2")
	rt1 := d.pair(t, "alice")
	otherRT := other.pair(t, "bob")
	code, m, rt2 := d.refresh(rt1)
	if code != 200 || rt2 == "" {
		t.Fatalf("refresh: %d %v", code, m)
	}
	if code, m, _ := d.refresh(rt1); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("rotated refresh token reused: %d %v, want 400 invalid_grant", code, m)
	}
	if code, m, _ := d.refresh(rt2); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("successor of a reused refresh token: %d %v, want 400 invalid_grant", code, m)
	}
	if code, m, _ := other.refresh(otherRT); code != 200 {
		t.Fatalf("another device's grant: %d %v", code, m)
	}
}
