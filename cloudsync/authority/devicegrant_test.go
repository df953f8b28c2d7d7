package authority_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// keyDevice is a device that authenticates with private_key_jwt.
type keyDevice struct {
	f   *fixture
	id  string
	key *demo.Issuer
}

func (f *fixture) keyDevice(id string) *keyDevice {
	k, _ := demo.NewIssuer(id, id+"-key")
	pub, _ := k.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: id, Serial: "SN-" + id, Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		f.t.Fatalf("import %s: %d %s", id, code, body)
	}
	return &keyDevice{f: f, id: id, key: k}
}

// post calls an OAuth endpoint as the device, with a fresh client assertion.
func (d *keyDevice) post(path string, form url.Values) (int, map[string]any) {
	now := time.Now()
	a, _ := d.key.Mint(map[string]any{"iss": d.id, "sub": d.id, "aud": d.f.srv.URL + "/oauth/token", "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}, nil)
	form.Set("client_id", d.id)
	form.Set("client_assertion_type", authority.ClientAssertionType)
	form.Set("client_assertion", a)
	code, body := d.f.do("POST", path, "", "application/x-www-form-urlencoded", form.Encode(), nil)
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	return code, m
}

func (d *keyDevice) start(t *testing.T) (deviceCode, userCode string) {
	code, m := d.post("/oauth/device_authorization", url.Values{})
	if code != 200 {
		t.Fatalf("device_authorization: %d %v", code, m)
	}
	return m["device_code"].(string), m["user_code"].(string)
}

func (d *keyDevice) poll(deviceCode string) (int, map[string]any) {
	return d.post("/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {deviceCode}})
}

func TestDeviceAuthorizationGrant(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-42")
	dc, uc := d.start(t)
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(uc) {
		t.Fatalf("user code %q is not from the RFC 8628 consonant alphabet", uc)
	}
	if code, m := d.poll(dc); code != 400 || m["error"] != "authorization_pending" {
		t.Fatalf("first poll: %d %v", code, m)
	}
	if code, m := d.poll(dc); code != 400 || m["error"] != "slow_down" {
		t.Fatalf("immediate second poll: %d %v", code, m)
	}
	// The owner types the code however they like.
	req, err := f.a.LookupPairing(strings.ToLower(strings.ReplaceAll(uc, "-", "")), "alice")
	if err != nil || req.Device.ID != "speaker-42" || len(req.Scope) == 0 {
		t.Fatalf("lookup: %+v %v", req, err)
	}
	if err := f.a.DecidePairing(uc, "alice", true); err != nil {
		t.Fatal(err)
	}
	if err := f.a.DecidePairing(uc, "alice", true); err == nil {
		t.Fatal("a user code was used twice")
	}
	if dev, _ := f.a.Store.Device("speaker-42"); dev.Owner != "alice" {
		t.Fatalf("device not paired: %+v", dev)
	}
	code, m := d.poll(dc)
	if code != 200 || m["refresh_token"] == nil {
		t.Fatalf("poll after approval: %d %v", code, m)
	}
	claims := decodeClaims(t, m["access_token"].(string))
	if claims["sub"] != "alice" || claims["client_id"] != "speaker-42" || claims["cnf"].(map[string]any)["jkt"] == nil {
		t.Fatalf("paired token claims %v", claims)
	}
	if code, m := d.poll(dc); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("device code used twice: %d %v", code, m)
	}
	// Refresh tokens rotate.
	old := m["refresh_token"].(string)
	code, r := d.post("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}})
	if code != 200 || r["refresh_token"] == old {
		t.Fatalf("refresh: %d %v", code, r)
	}
	if code, m := d.post("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}}); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("old refresh token reused: %d %v", code, m)
	}
	// Another device cannot use this device's refresh token.
	other := f.keyDevice("speaker-43")
	if code, m := other.post("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r["refresh_token"].(string)}}); code != 400 {
		t.Fatalf("refresh token of another device: %d %v", code, m)
	}
	// Unpairing ends the refresh tokens (this one was spent by the attempt above too).
	if err := f.a.Unpair("speaker-42", "alice"); err != nil {
		t.Fatal(err)
	}
	if dev, _ := f.a.Store.Device("speaker-42"); dev.Owner != "" {
		t.Fatalf("still paired: %+v", dev)
	}
	if r, ok, _ := f.a.Store.Revocation(store.RevokeDevice, "speaker-42"); !ok || r.ExpiresAt.IsZero() {
		t.Fatalf("unpair did not revoke the device's tokens: %+v", r)
	}

	// Denied.
	dc2, uc2 := other.start(t)
	if err := f.a.DecidePairing(uc2, "bob", false); err != nil {
		t.Fatal(err)
	}
	if code, m := other.poll(dc2); code != 400 || m["error"] != "access_denied" {
		t.Fatalf("denied: %d %v", code, m)
	}
	// A device paired to someone else cannot be taken over by a new code.
	dc3, uc3 := d.start(t)
	_ = dc3
	if err := f.a.DecidePairing(uc3, "bob", true); err != nil {
		t.Fatalf("next owner pairing an unpaired device: %v", err)
	}
	dc4, uc4 := d.start(t)
	_ = dc4
	if err := f.a.DecidePairing(uc4, "mallory", true); err == nil || !strings.Contains(err.Error(), "paired to another account") {
		t.Fatalf("pairing a device owned by someone else: %v", err)
	}
	if code, m := d.post("/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {"nope"}}); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("unknown device code: %d %v", code, m)
	}
}

func TestDeviceCodeExpires(t *testing.T) {
	f := newFixtureWith(t, func(c *authority.Config) { c.PairingCodeTTL = time.Second })
	f.classes()
	d := f.keyDevice("speaker-44")
	dc, _ := d.start(t)
	time.Sleep(1100 * time.Millisecond)
	if code, m := d.poll(dc); code != 400 || m["error"] != "expired_token" {
		t.Fatalf("expired device code: %d %v", code, m)
	}
}

func decodeClaims(t *testing.T, tok string) map[string]any {
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}
