package authority_test

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type fixture struct {
	t    *testing.T
	a    *authority.Authority
	srv  *httptest.Server
	fp   string
	logs *logBuf
	tls  demo.Files
}

const adminToken = "test-admin-token-0123456789"

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, nil) }

// fixtureStorage, when set, opens the storage fixtures run on (a test that
// runs others on PostgreSQL sets it; never while parallel tests run);
// Badger in a temporary directory otherwise.
var fixtureStorage func(t *testing.T) (authority.Storage, func())

func openFixtureStorage(t *testing.T) (authority.Storage, func()) {
	if fixtureStorage != nil {
		return fixtureStorage(t)
	}
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return st, func() { st.Close() }
}

func newFixtureWith(t *testing.T, mod func(*authority.Config)) *fixture {
	var h http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	st, closeStore := openFixtureStorage(t)
	logs := &logBuf{}
	cfg := authority.Config{URL: srv.URL, TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	a, err := authority.New(cfg, st, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); srv.Close(); closeStore() })
	h = authority.NewHandler(a, adminToken)
	sum := sha256.Sum256(srv.Certificate().Raw)
	files, err := demo.WriteTLS(t.TempDir(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, a: a, srv: srv, fp: hex.EncodeToString(sum[:]), logs: logs, tls: files}
}

func (f *fixture) do(method, path, token, ctype, body string, cert *tls.Certificate) (int, string) {
	f.t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	c := client.HTTPClient(f.fp)
	if cert != nil {
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) classes() {
	b, _ := json.Marshal(store.Batch{Classes: demo.Classes()})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		f.t.Fatalf("classes: %d %s", code, body)
	}
}

func TestAdminNeedsToken(t *testing.T) {
	f := newFixture(t)
	for _, tok := range []string{"", "wrong-token"} {
		if code, _ := f.do("GET", "/admin/v1/devices", tok, "", "", nil); code != 401 {
			t.Errorf("token %q: %d, want 401", tok, code)
		}
	}
	if !strings.Contains(f.logs.String(), "admin request refused") || strings.Contains(f.logs.String(), "wrong-token") {
		t.Error("refusal not logged, or the presented token was logged")
	}
	if code, _ := f.do("GET", "/admin/v1/devices", adminToken, "", "", nil); code != 200 {
		t.Errorf("admin token: %d", code)
	}
}

func TestCSVImportAllOrNothing(t *testing.T) {
	f := newFixture(t)
	f.classes()
	good := "id,serial,class,owner\ndev-1,S1,thermostat,alice\ndev-2,S2,thermostat,\n"
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "text/csv", good, nil); code != 200 {
		t.Fatalf("csv import: %d %s", code, body)
	}
	bad := "id,class,status\ndev-3,thermostat,active\ndev-4,nope,active\ndev 5,thermostat,sleeping\n"
	code, body := f.do("POST", "/admin/v1/import", adminToken, "text/csv", bad, nil)
	if code != 422 || !strings.Contains(body, `devices[1] (dev-4).class \"nope\" is not known`) || !strings.Contains(body, `devices[2].id \"dev 5\"`) {
		t.Fatalf("bad csv: %d %s", code, body)
	}
	if _, err := f.a.Store.Device("dev-3"); err == nil {
		t.Fatal("a rejected import created dev-3")
	}
	// Re-uploading the list never re-activates a revoked device or drops its owner.
	if code, body := f.do("POST", "/admin/v1/devices/dev-1/revoke", adminToken, "", "", nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "text/csv", "id,serial,class\ndev-1,S1-NEW,thermostat\n", nil); code != 200 {
		t.Fatalf("re-upload: %d %s", code, body)
	}
	if d, _ := f.a.Store.Device("dev-1"); d.Status != store.DeviceRevoked || d.Owner != "alice" || d.Serial != "S1-NEW" {
		t.Fatalf("re-uploaded device: %+v", d)
	}
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "text/csv", "id,colour\nx,red\n", nil); code != 400 || !strings.Contains(body, `unknown column \"colour\"`) {
		t.Fatalf("unknown column: %d %s", code, body)
	}
	if !strings.Contains(f.logs.String(), "by=admin:bootstrap") {
		t.Error("admin changes not logged with who made them")
	}
}

func TestCallHomeRevokeIntrospect(t *testing.T) {
	f := newFixture(t)
	f.classes()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil)
	cert, _ := tls.LoadX509KeyPair(f.tls.DeviceCert, f.tls.DeviceKey)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}.Encode()
	ctype := "application/x-www-form-urlencoded"

	if code, body := f.do("POST", "/oauth/token", "", ctype, form, nil); code != 401 || !strings.Contains(body, "invalid_client") {
		t.Fatalf("call home without a certificate: %d %s", code, body)
	}
	other, _ := demo.WriteTLS(t.TempDir(), "dev-1")
	otherCert, _ := tls.LoadX509KeyPair(other.DeviceCert, other.DeviceKey)
	if code, _ := f.do("POST", "/oauth/token", "", ctype, form, &otherCert); code != 401 {
		t.Fatalf("call home with another certificate: %d", code)
	}
	code, body := f.do("POST", "/oauth/token", "", ctype, form, &cert)
	var tr authority.TokenResponse
	if code != 200 || json.Unmarshal([]byte(body), &tr) != nil || !strings.Contains(tr.Scope, "publish:devices/dev-1/telemetry/#") {
		t.Fatalf("call home: %d %s", code, body)
	}
	intro := func() map[string]any {
		_, body := f.do("POST", "/oauth/introspect", adminToken, ctype, url.Values{"token": {tr.AccessToken}}.Encode(), nil)
		var m map[string]any
		_ = json.Unmarshal([]byte(body), &m)
		return m
	}
	if m := intro(); m["active"] != true || m["client_id"] != "dev-1" || m["cnf"] == nil {
		t.Fatalf("introspect a fresh token: %v", m)
	}
	if code, _ := f.do("POST", "/oauth/revoke", adminToken, ctype, url.Values{"token": {tr.AccessToken}}.Encode(), nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if m := intro(); m["active"] != false {
		t.Fatalf("introspect a revoked token: %v", m)
	}
	if code, _ := f.do("POST", "/oauth/revoke", adminToken, ctype, url.Values{"token": {"not-a-token"}}.Encode(), nil); code != 200 {
		t.Fatalf("RFC 7009: revoking an unknown token answers 200, got %d", code)
	}
	code, body = f.do("GET", "/.well-known/oauth-authorization-server", "", "", "", nil)
	if code != 200 || !strings.Contains(body, `"issuer":"`+f.srv.URL+`"`) || !strings.Contains(body, "/oauth/revoke") {
		t.Fatalf("metadata: %d %s", code, body)
	}
	code, body = f.do("GET", "/jwks.json", "", "", "", nil)
	if code != 200 || !strings.Contains(body, `"alg":"ES256"`) || strings.Contains(body, `"d":`) {
		t.Fatalf("jwks (must hold public keys only): %d %s", code, body)
	}
}

func TestTokenKeyRotation(t *testing.T) {
	f := newFixture(t) // KeyPublishAhead 0: the next key signs as soon as it is published
	f.classes()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil)
	cert, _ := tls.LoadX509KeyPair(f.tls.DeviceCert, f.tls.DeviceKey)
	callHome := func() string {
		_, body := f.do("POST", "/oauth/token", "", "application/x-www-form-urlencoded",
			url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}.Encode(), &cert)
		var tr authority.TokenResponse
		_ = json.Unmarshal([]byte(body), &tr)
		return tr.AccessToken
	}
	kidOf := func(tok string) string {
		h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		var m map[string]any
		_ = json.Unmarshal(h, &m)
		return m["kid"].(string)
	}
	jwksKids := func() []string {
		_, body := f.do("GET", "/jwks.json", "", "", "", nil)
		var set struct{ Keys []struct{ Kid string } }
		_ = json.Unmarshal([]byte(body), &set)
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	old := callHome()
	if ks := jwksKids(); len(ks) != 1 || ks[0] != kidOf(old) {
		t.Fatalf("before rotation: jwks %v, token kid %s", ks, kidOf(old))
	}
	code, body := f.do("POST", "/admin/v1/keys/rotate", adminToken, "", "", nil)
	if code != 200 {
		t.Fatalf("rotate: %d %s", code, body)
	}
	var rr struct {
		NextKid string `json:"next_kid"`
	}
	_ = json.Unmarshal([]byte(body), &rr)
	if ks := jwksKids(); len(ks) != 2 {
		t.Fatalf("the next key is not published before it signs: %v", ks)
	}
	// The feed carries both keys to the gateways.
	iss, _ := f.a.Store.Issuers()
	if len(iss) != 1 || !strings.Contains(string(iss[0].JWKS), rr.NextKid) {
		t.Fatalf("issuer record in the feed lacks the next key: %s", iss[0].JWKS)
	}
	fresh := callHome()
	if kidOf(fresh) != rr.NextKid {
		t.Fatalf("after promotion: token kid %s, want %s", kidOf(fresh), rr.NextKid)
	}
	// Tokens of the retired key stay valid while they live.
	_, body = f.do("POST", "/oauth/introspect", adminToken, "application/x-www-form-urlencoded", url.Values{"token": {old}}.Encode(), nil)
	if !strings.Contains(body, `"active":true`) {
		t.Fatalf("token of the retired key: %s", body)
	}
	if ks := jwksKids(); len(ks) != 2 {
		t.Fatalf("after promotion the previous key must stay published: %v", ks)
	}
}

func TestCallHomeWithPrivateKeyJWT(t *testing.T) {
	f := newFixture(t)
	f.classes()
	iss, _ := demo.NewIssuer("dev-k", "dev-k-key") // stands in for the device's own key pair
	pub, _ := iss.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-k", Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	assertion := func(mod func(map[string]any)) string {
		now := time.Now()
		c := map[string]any{"iss": "dev-k", "sub": "dev-k", "aud": f.srv.URL + "/oauth/token", "iat": now.Unix(),
			"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}
		if mod != nil {
			mod(c)
		}
		tok, err := iss.Mint(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	post := func(a string) (int, string) {
		return f.do("POST", "/oauth/token", "", "application/x-www-form-urlencoded", url.Values{"grant_type": {"client_credentials"},
			"client_id": {"dev-k"}, "client_assertion_type": {authority.ClientAssertionType}, "client_assertion": {a}}.Encode(), nil)
	}
	good := assertion(nil)
	code, body := post(good)
	var tr authority.TokenResponse
	if code != 200 || json.Unmarshal([]byte(body), &tr) != nil {
		t.Fatalf("private_key_jwt call home: %d %s", code, body)
	}
	thumb, _ := pub.Thumbprint(crypto.SHA256)
	claims, _ := base64.RawURLEncoding.DecodeString(strings.Split(tr.AccessToken, ".")[1])
	if !strings.Contains(string(claims), `"jkt":"`+base64.RawURLEncoding.EncodeToString(thumb)+`"`) {
		t.Fatalf("token not bound to the device key: %s", claims)
	}
	if code, _ := post(good); code != 401 {
		t.Errorf("replayed assertion: %d, want 401", code)
	}
	for name, a := range map[string]string{
		"wrong audience": assertion(func(c map[string]any) { c["aud"] = "https://elsewhere" }),
		"expired": assertion(func(c map[string]any) {
			c["exp"] = time.Now().Add(-time.Hour).Unix()
			c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
		}),
		"too long-lived": assertion(func(c map[string]any) { c["exp"] = time.Now().Add(2 * time.Hour).Unix() }), // an hour is allowed (Authlib)
		"another issuer": assertion(func(c map[string]any) { c["iss"] = "dev-x" }),
		"no jti":         assertion(func(c map[string]any) { delete(c, "jti") }),
	} {
		if code, _ := post(a); code != 401 {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	other, _ := demo.NewIssuer("dev-k", "dev-k-key")
	forged, _ := other.Mint(map[string]any{"iss": "dev-k", "sub": "dev-k", "aud": f.srv.URL + "/oauth/token",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Minute).Unix(), "jti": "x"}, nil)
	if code, _ := post(forged); code != 401 {
		t.Errorf("assertion signed by another key: %d, want 401", code)
	}
}

// Class records carry their rate limits through the admin API, checked like
// every other field.
func TestImportClassLimits(t *testing.T) {
	f := newFixture(t)
	c := demo.Classes()[0]
	c.Limits = &store.ClassLimits{Device: store.Rates{MessagesPerSecond: 2, MessageBurst: 4}, Class: store.Rates{BytesPerSecond: 1000, ByteBurst: 4000}}
	b, _ := json.Marshal(store.Batch{Classes: []store.DeviceClass{c}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	if got, err := f.a.Store.Class(c.Name); err != nil || got.Limits == nil || *got.Limits != *c.Limits {
		t.Fatalf("stored class %+v, %v; want limits %+v", got, err, *c.Limits)
	}
	_, body := f.do("GET", "/admin/v1/classes", adminToken, "", "", nil)
	if !strings.Contains(body, `"limits":{"device":{"messages_per_second":2,"message_burst":4},"class":{"bytes_per_second":1000,"byte_burst":4000}}`) {
		t.Fatalf("classes listing without the limits: %s", body)
	}
	bad := `{"classes":[{"name":"thermostat","permissions":[],"limits":{"class":{"bytes_per_second":10}}}]}`
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", bad, nil); code != 422 ||
		!strings.Contains(body, "classes[0].limits.class.byte_burst must be at least 1 when bytes_per_second is set") {
		t.Fatalf("bad limits: %d %s", code, body)
	}
	typo := `{"classes":[{"name":"thermostat","permissions":[],"limits":{"devices":{"messages_per_second":1}}}]}`
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", typo, nil); code != 400 || !strings.Contains(body, `unknown field \"devices\"`) {
		t.Fatalf("misspelt limits key: %d %s", code, body)
	}
	if got, _ := f.a.Store.Class(c.Name); *got.Limits != *c.Limits {
		t.Fatalf("refused imports changed the class: %+v", got.Limits)
	}
}
