package authority_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

const formType = "application/x-www-form-urlencoded"

// introspect asks the introspection endpoint about tok with the bootstrap key.
func (f *fixture) introspect(tok string) map[string]any {
	f.t.Helper()
	_, body := f.do("POST", "/oauth/introspect", adminToken, formType, url.Values{"token": {tok}}.Encode(), nil)
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	return m
}

// jtiRevocation is the synced revocation of the token tok's jti, if any,
// and who made the change that logged it.
func (f *fixture) jtiRevocation(tok string) (store.Revocation, string, bool) {
	f.t.Helper()
	jti, _ := decodeClaims(f.t, tok)["jti"].(string)
	es, err := f.a.Store.LogSince(0, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, e := range es {
		for _, r := range e.Batch.Revocations {
			if r.Kind == store.RevokeToken && r.Value == jti {
				return r, e.By, true
			}
		}
	}
	return store.Revocation{}, "", false
}

// Issue 15, RFC 7009: a device could not revoke its own tokens; revocation
// took only the admin token. A device revokes its access and refresh tokens
// with its client assertion; another client's token is left alone with the
// same 200 (§2.2), and the log says why. Revoking the refresh token revokes
// the access tokens issued in its grant (each by jti, synced to the
// gateways), not the device's other tokens.
func TestDeviceRevokesItsOwnTokens(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	other := f.keyDevice("speaker-2")
	dc, uc := d.start(t)
	if err := f.a.DecidePairing(uc, "alice", true); err != nil {
		t.Fatal(err)
	}
	_, first := d.poll(dc)
	at1, rt1 := first["access_token"].(string), first["refresh_token"].(string)
	code, m, rt2 := d.refresh(rt1)
	if code != 200 {
		t.Fatalf("refresh: %d %v", code, m)
	}
	at2 := m["access_token"].(string)
	_, ch := d.post("/oauth/token", url.Values{"grant_type": {"client_credentials"}})
	callHome := ch["access_token"].(string)
	bobRT := other.pair(t, "bob")
	_, bob, bobRT := other.refresh(bobRT)
	bobAT := bob["access_token"].(string)

	revoke := func(dev *keyDevice, tok, hint string) (int, map[string]any) {
		t.Helper()
		form := url.Values{"token": {tok}}
		if hint != "" {
			form.Set("token_type_hint", hint)
		}
		return dev.post("/oauth/revoke", form)
	}
	// Another client's tokens: 200, nothing done.
	if code, m := revoke(d, bobAT, ""); code != 200 || len(m) != 0 {
		t.Fatalf("revoke another client's access token: %d %v", code, m)
	}
	if code, m := revoke(d, bobRT, "refresh_token"); code != 200 {
		t.Fatalf("revoke another client's refresh token: %d %v", code, m)
	}
	if f.introspect(bobAT)["active"] != true {
		t.Fatal("another client's access token was revoked")
	}
	if code, m, _ := other.refresh(bobRT); code != 200 {
		t.Fatalf("another client's refresh token after speaker-1 tried to revoke it: %d %v", code, m)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "revocation of another client's token ignored") ||
		!strings.Contains(logs, "revocation of another client's refresh token ignored") {
		t.Fatalf("ignored revocations not logged:\n%s", logs)
	}
	// Its own access token: revoked, synced, recorded as the device's doing.
	if code, _ := revoke(d, callHome, "access_token"); code != 200 {
		t.Fatalf("revoke own access token: %d", code)
	}
	if f.introspect(callHome)["active"] != false {
		t.Fatal("own access token still active after revocation")
	}
	if _, by, ok := f.jtiRevocation(callHome); !ok || by != "device:speaker-1" {
		t.Fatalf("revocation of the call-home token: synced %v, by %q", ok, by)
	}
	// Its own refresh token: the grant ends, with the access tokens issued
	// in it (at1 from the pairing, at2 from the refresh).
	if f.introspect(at1)["active"] != true || f.introspect(at2)["active"] != true {
		t.Fatal("the grant's access tokens are not active before the revocation")
	}
	if code, _ := revoke(d, rt2, "refresh_token"); code != 200 {
		t.Fatalf("revoke own refresh token: %d", code)
	}
	if code, m, _ := d.refresh(rt2); code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("revoked refresh token: %d %v", code, m)
	}
	for name, tok := range map[string]string{"first": at1, "refreshed": at2} {
		if f.introspect(tok)["active"] != false {
			t.Errorf("the grant's %s access token is still active", name)
		}
		r, by, ok := f.jtiRevocation(tok)
		if !ok || by != "device:speaker-1" || !r.ExpiresAt.After(time.Now()) {
			t.Errorf("the grant's %s access token: synced jti revocation %v %+v by %q", name, ok, r, by)
		}
	}
	// A device's other tokens are its own business: a new call-home token works.
	if code, m := d.post("/oauth/token", url.Values{"grant_type": {"client_credentials"}}); code != 200 || f.introspect(m["access_token"].(string))["active"] != true {
		t.Fatalf("call home after the grant was revoked: %d %v", code, m)
	}

	// Without a credential, or with a bad one: 401 invalid_client.
	if code, body := f.do("POST", "/oauth/revoke", "", formType, url.Values{"token": {at2}}.Encode(), nil); code != 401 || !strings.Contains(body, "invalid_client") {
		t.Fatalf("no credential: %d %s", code, body)
	}
	bad := url.Values{"token": {at2}, "client_id": {"speaker-1"}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {"x.y.z"}}
	if code, body := f.do("POST", "/oauth/revoke", "", formType, bad.Encode(), nil); code != 401 || !strings.Contains(body, "invalid_client") {
		t.Fatalf("bad assertion: %d %s", code, body)
	}
	if code, _ := f.do("POST", "/oauth/revoke", "wrong-admin-key", formType, url.Values{"token": {bobAT}}.Encode(), nil); code != 401 {
		t.Fatalf("wrong admin key: %d", code)
	}
	if f.introspect(bobAT)["active"] != true {
		t.Fatal("a refused revocation revoked")
	}
}

// A device that authenticates with its pinned certificate revokes its own
// token over mutual TLS, with or without client_id (the certificate names
// it); a certificate that is not registered is refused.
func TestDeviceRevokesOverMutualTLS(t *testing.T) {
	f := newFixture(t)
	f.classes()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	cert, err := tls.LoadX509KeyPair(f.tls.DeviceCert, f.tls.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []url.Values{{"client_id": {"dev-1"}}, {}} {
		what := "with client_id"
		if len(form) == 0 {
			what = "without client_id"
		}
		code, m := f.postToken(url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}, &cert)
		if code != 200 {
			t.Fatalf("call home: %d %v", code, m)
		}
		tok := m["access_token"].(string)
		form.Set("token", tok)
		if code, body := f.do("POST", "/oauth/revoke", "", formType, form.Encode(), &cert); code != 200 {
			t.Fatalf("revoke over mutual TLS %s: %d %s", what, code, body)
		}
		if f.introspect(tok)["active"] != false {
			t.Fatalf("revoked over mutual TLS %s, still active", what)
		}
	}
	code, m := f.postToken(url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}, &cert)
	if code != 200 {
		t.Fatalf("call home: %d %v", code, m)
	}
	files, err := demo.WriteTLS(t.TempDir(), "dev-1") // the same name, another key and certificate
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := f.do("POST", "/oauth/revoke", "", formType, url.Values{"token": {m["access_token"].(string)}}.Encode(), &stranger); code != 401 {
		t.Fatalf("unregistered certificate: %d, want 401", code)
	}
}

// Issue 15: introspection and revocation accepted only the admin token; a
// resource server must use its own credential. An enrolled gateway's
// request assertion (single use) introspects and revokes; a replayed or
// foreign one is refused.
func TestGatewayIntrospectsAndRevokes(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	rt := d.pair(t, "alice")
	code, m, _ := d.refresh(rt)
	if code != 200 {
		t.Fatalf("refresh: %d %v", code, m)
	}
	tok := m["access_token"].(string)
	enrollCode, _, err := f.a.AddGateway("gw-1", "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := client.Enroll(context.Background(), f.srv.URL, f.fp, enrollCode, "test-board")
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwk.ParseKey(e.Key)
	if err != nil {
		t.Fatal(err)
	}
	assertion := func() string {
		a, err := cloudsync.SignAssertion(key, "gw-1", f.srv.URL, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	call := func(path, auth, token string) (int, map[string]any) {
		t.Helper()
		code, _, body := f.call("POST", path, http.Header{"Authorization": {auth}, "Content-Type": {formType}}, url.Values{"token": {token}}.Encode(), nil)
		var m map[string]any
		_ = json.Unmarshal([]byte(body), &m)
		return code, m
	}
	a := assertion()
	if code, m := call("/oauth/introspect", "EdgeID-GW "+a, tok); code != 200 || m["active"] != true || m["client_id"] != "speaker-1" {
		t.Fatalf("gateway introspects: %d %v", code, m)
	}
	if code, _ := call("/oauth/introspect", "EdgeID-GW "+a, tok); code != 401 {
		t.Fatalf("replayed gateway assertion: %d, want 401", code)
	}
	if code, _ := call("/oauth/introspect", "EdgeID-GW not.a.jwt", tok); code != 401 {
		t.Fatalf("bad gateway assertion: %d, want 401", code)
	}
	if code, _ := call("/oauth/introspect", "", tok); code != 401 {
		t.Fatalf("introspection without a credential: %d, want 401", code)
	}
	if code, m := call("/oauth/revoke", "EdgeID-GW "+assertion(), tok); code != 200 {
		t.Fatalf("gateway revokes: %d %v", code, m)
	}
	if f.introspect(tok)["active"] != false {
		t.Fatal("revoked by the gateway, still active")
	}
	if _, by, ok := f.jtiRevocation(tok); !ok || by != "gateway:gw-1" {
		t.Fatalf("gateway's revocation: synced %v by %q", ok, by)
	}
}

// Clients authenticate at the revocation endpoint as at the token
// endpoint, and share its per-address rate: past it, 429.
func TestRevocationRateLimited(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := authority.NewHandler(f.a, adminToken)
	l := authority.DefaultLimits()
	l.Token = authority.Rate{Every: time.Minute, Burst: 2}
	h.SetLimits(l)
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	revoke := func() (int, map[string]any) {
		resp, err := srv.Client().PostForm(srv.URL+"/oauth/revoke", url.Values{"token": {"not-a-token"}, "client_id": {"nobody"}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for i := 0; i < 2; i++ {
		if code, m := revoke(); code == 429 {
			t.Fatalf("revocation %d: %d %v", i, code, m)
		}
	}
	if code, m := revoke(); code != 429 || m["error"] != "temporarily_unavailable" {
		t.Fatalf("3rd revocation: %d %v", code, m)
	}
}
