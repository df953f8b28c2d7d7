package authority_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/store"
)

// dpopKey is a client's DPoP key pair (not the device's registered key).
func dpopKey(t *testing.T) (jwk.Key, string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(priv)
	if err != nil {
		t.Fatal(err)
	}
	jkt, err := dpop.Thumbprint(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, jkt
}

// proofFor is a proof for a POST to the authority's token endpoint.
func (f *fixture) proofFor(k jwk.Key) string {
	f.t.Helper()
	p, err := dpop.Sign(k, "POST", f.srv.URL+"/oauth/token", "", "", time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// postToken posts form to the token endpoint with one DPoP header per
// proof, over mutual TLS with cert if not nil.
func (f *fixture) postToken(form url.Values, cert *tls.Certificate, proofs ...string) (int, map[string]any) {
	f.t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, p := range proofs {
		req.Header.Add("DPoP", p)
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
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		f.t.Fatalf("token endpoint: %d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// assertionForm is a client_credentials-style form authenticated with a
// fresh client assertion of device d.
func (d *keyDevice) assertionForm(form url.Values) url.Values {
	now := time.Now()
	a, _ := d.key.Mint(map[string]any{"iss": d.id, "sub": d.id, "aud": d.f.srv.URL + "/oauth/token", "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}, nil)
	form.Set("client_id", d.id)
	form.Set("client_assertion_type", authority.ClientAssertionType)
	form.Set("client_assertion", a)
	return form
}

func cnfOf(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("no access token: %v", m)
	}
	cnf, _ := decodeClaims(t, tok)["cnf"].(map[string]any)
	return cnf
}

// wantDPoPToken checks a 200 answer with a DPoP token bound to jkt (and to
// nothing else unless x5t is set).
func wantDPoPToken(t *testing.T, what string, code int, m map[string]any, jkt, x5t string) {
	t.Helper()
	if code != 200 {
		t.Fatalf("%s: %d %v", what, code, m)
	}
	if m["token_type"] != "DPoP" {
		t.Fatalf("%s: token_type %v, want DPoP", what, m["token_type"])
	}
	want := map[string]any{"jkt": jkt}
	if x5t != "" {
		want["x5t#S256"] = x5t
	}
	if cnf := cnfOf(t, m); fmt.Sprint(cnf) != fmt.Sprint(want) {
		t.Fatalf("%s: cnf %v, want %v", what, cnf, want)
	}
}

func wantOAuthError(t *testing.T, what string, code int, m map[string]any, err string) {
	t.Helper()
	if code != 400 || m["error"] != err {
		t.Fatalf("%s: %d %v, want 400 %s", what, code, m, err)
	}
	if d, _ := m["error_description"].(string); d == "" {
		t.Fatalf("%s: no error_description: %v", what, m)
	}
}

// TestDPoPClientCredentials: a call-home request with a DPoP proof (made by
// a Go client with dpop.Sign) gets a DPoP token bound to the proof's key;
// a replayed or wrong proof is invalid_dpop_proof; without DPoP nothing
// changes.
func TestDPoPClientCredentials(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("dev-dpop")
	k, jkt := dpopKey(t)
	cc := func() url.Values { return d.assertionForm(url.Values{"grant_type": {"client_credentials"}}) }

	p := f.proofFor(k)
	code, m := f.postToken(cc(), nil, p)
	wantDPoPToken(t, "call home with DPoP", code, m, jkt, "")

	code, m = f.postToken(cc(), nil, p)
	wantOAuthError(t, "replayed proof", code, m, "invalid_dpop_proof")
	if !strings.Contains(m["error_description"].(string), "replayed") {
		t.Errorf("replay refusal says %q", m["error_description"])
	}

	other, _ := dpop.Sign(k, "POST", f.srv.URL+"/oauth/revoke", "", "", time.Now())
	wrongHost, _ := dpop.Sign(k, "POST", "https://elsewhere.example/oauth/token", "", "", time.Now())
	wrongMethod, _ := dpop.Sign(k, "GET", f.srv.URL+"/oauth/token", "", "", time.Now())
	withAth, _ := dpop.Sign(k, "POST", f.srv.URL+"/oauth/token", "some-token", "", time.Now())
	old, _ := dpop.Sign(k, "POST", f.srv.URL+"/oauth/token", "", "", time.Now().Add(-5*time.Minute))
	for name, proofs := range map[string][]string{
		"other endpoint":       {other},
		"other host":           {wrongHost},
		"GET":                  {wrongMethod},
		"ath at token":         {withAth},
		"too old":              {old},
		"garbage":              {"not-a-jwt"},
		"empty":                {""},
		"two DPoP headers":     {f.proofFor(k), f.proofFor(k)},
		"signature tampered":   {p[:len(p)-4] + "AAAA"},
		"proof of another key": {strings.Split(p, ".")[0] + "." + strings.Split(f.proofFor(k), ".")[1] + "." + strings.Split(f.proofFor(dpopKeyOnly(t)), ".")[2]},
	} {
		code, m := f.postToken(cc(), nil, proofs...)
		wantOAuthError(t, name, code, m, "invalid_dpop_proof")
	}
	if strings.Contains(f.logs.String(), p) {
		t.Error("a proof was logged")
	}
	if !strings.Contains(f.logs.String(), "DPoP proof refused") {
		t.Error("refusals not logged")
	}

	// A client that fails client authentication gets invalid_client, and
	// its proof is not spent.
	bad := cc()
	bad.Set("client_assertion", "x.y.z")
	p2 := f.proofFor(k)
	if code, m := f.postToken(bad, nil, p2); code != 401 || m["error"] != "invalid_client" {
		t.Fatalf("bad client assertion with a good proof: %d %v", code, m)
	}
	code, m = f.postToken(cc(), nil, p2)
	wantDPoPToken(t, "proof after a refused client", code, m, jkt, "")

	// Without DPoP: a Bearer token bound to the device's registered key.
	code, m = f.postToken(cc(), nil)
	if code != 200 || m["token_type"] != "Bearer" {
		t.Fatalf("without DPoP: %d %v", code, m)
	}
	if cnf := cnfOf(t, m); cnf["jkt"] == jkt || len(cnf) != 1 {
		t.Fatalf("without DPoP the token is bound to %v", cnf)
	}
}

func dpopKeyOnly(t *testing.T) jwk.Key { k, _ := dpopKey(t); return k }

// TestDPoPDeviceGrantAndRefresh: the device-code poll with DPoP gives a DPoP
// token and a refresh token bound to the key; a refresh must prove the
// same key (RFC 9449 §5.2).
func TestDPoPDeviceGrantAndRefresh(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-dpop")
	k, jkt := dpopKey(t)
	k2, _ := dpopKey(t)
	pair := func(proofs ...string) (int, map[string]any) {
		dc, uc := d.start(t)
		if err := f.a.DecidePairing(uc, "alice", true); err != nil {
			t.Fatal(err)
		}
		return f.postToken(d.assertionForm(url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {dc}}), nil, proofs...)
	}
	refresh := func(rt string, proofs ...string) (int, map[string]any) {
		return f.postToken(d.assertionForm(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}), nil, proofs...)
	}

	code, m := pair(f.proofFor(k))
	wantDPoPToken(t, "device code poll", code, m, jkt, "")
	if decodeClaims(t, m["access_token"].(string))["sub"] != "alice" {
		t.Fatalf("paired token's sub: %v", decodeClaims(t, m["access_token"].(string)))
	}
	code, m = refresh(m["refresh_token"].(string), f.proofFor(k))
	wantDPoPToken(t, "refresh with the same key", code, m, jkt, "")
	code, m = refresh(m["refresh_token"].(string), f.proofFor(k2))
	wantOAuthError(t, "refresh with another key", code, m, "invalid_grant")

	code, m = pair(f.proofFor(k))
	wantDPoPToken(t, "second pairing", code, m, jkt, "")
	code, m = refresh(m["refresh_token"].(string))
	wantOAuthError(t, "refresh without a proof", code, m, "invalid_grant")

	code, m = pair(f.proofFor(k))
	wantDPoPToken(t, "third pairing", code, m, jkt, "")
	code, m = refresh(m["refresh_token"].(string), "garbage")
	wantOAuthError(t, "refresh with a bad proof", code, m, "invalid_dpop_proof")

	// A refresh token issued without DPoP may be refreshed with a proof:
	// from then on it is bound.
	code, m = pair()
	if code != 200 || m["token_type"] != "Bearer" {
		t.Fatalf("pairing without DPoP: %d %v", code, m)
	}
	code, m = refresh(m["refresh_token"].(string), f.proofFor(k))
	wantDPoPToken(t, "bearer refresh token refreshed with DPoP", code, m, jkt, "")
	code, m = refresh(m["refresh_token"].(string))
	wantOAuthError(t, "then without a proof", code, m, "invalid_grant")

	// A device code poll with a bad proof is refused before the code is
	// used: a poll with a good proof still gets the token.
	dc, uc := d.start(t)
	if err := f.a.DecidePairing(uc, "alice", true); err != nil {
		t.Fatal(err)
	}
	code, m = f.postToken(d.assertionForm(url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {dc}}), nil, "bad")
	wantOAuthError(t, "poll with a bad proof", code, m, "invalid_dpop_proof")
	code, m = f.postToken(d.assertionForm(url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {dc}}), nil, f.proofFor(k))
	wantDPoPToken(t, "poll with a good proof after a bad one", code, m, jkt, "")
}

// TestDPoPWithCertificate: a device authenticating with its factory
// certificate and a DPoP proof gets a token bound to both (x5t#S256 kept,
// jkt added), that ends no later than the certificate.
func TestDPoPWithCertificate(t *testing.T) {
	f := newFixture(t) // TokenTTL 1h
	f.classes()
	cert, leaf, fp := factoryCert(t, "dev-1", time.Now().Add(-time.Hour), time.Now().Add(10*time.Minute))
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: fp}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	k, jkt := dpopKey(t)
	code, m := f.postToken(url.Values{"grant_type": {"client_credentials"}, "client_id": {"dev-1"}}, &cert, f.proofFor(k))
	sum := sha256.Sum256(leaf.Raw)
	wantDPoPToken(t, "mutual TLS and DPoP", code, m, jkt, base64.RawURLEncoding.EncodeToString(sum[:]))
	if exp := int64(decodeClaims(t, m["access_token"].(string))["exp"].(float64)); exp > leaf.NotAfter.Unix() {
		t.Fatalf("exp %d after the certificate's NotAfter %d", exp, leaf.NotAfter.Unix())
	}
}

func TestDPoPMetadata(t *testing.T) {
	f := newFixture(t)
	code, body := f.do("GET", "/.well-known/oauth-authorization-server", "", "", "", nil)
	var md struct {
		Algs []string `json:"dpop_signing_alg_values_supported"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &md) != nil {
		t.Fatalf("metadata: %d %s", code, body)
	}
	if !slices.Equal(md.Algs, []string{"ES256", "ES384", "EdDSA"}) {
		t.Fatalf("dpop_signing_alg_values_supported %v", md.Algs)
	}
}

// TestDPoPPythonClient: stock clients, not our code: Debian's
// python3-requests posts a client_credentials request authenticated with a
// client assertion and a DPoP proof, both made by python3-jwcrypto; the
// token is bound to the thumbprint jwcrypto computes, and the same proof
// sent again is refused.
func TestDPoPPythonClient(t *testing.T) {
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import jwcrypto, requests").CombinedOutput(); err != nil {
		t.Fatalf("%s lacks jwcrypto or requests (%v: %s): install python3-jwcrypto and python3-requests (.ci/run does)", py, err, out)
	}
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("dev-py")
	devKey, err := json.Marshal(d.key.Key) // the device's private key, handed to the script
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, time, uuid
import requests
from jwcrypto import jwk, jws, jwt
url, dev_id, dev_key, ca = sys.argv[1:5]
device = jwk.JWK.from_json(dev_key)
proof_key = jwk.JWK.generate(kty="EC", crv="P-256")

def assertion():
    now = int(time.time())
    t = jwt.JWT(header={"alg": "ES256", "kid": device.key_id},
                claims={"iss": dev_id, "sub": dev_id, "aud": url, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())})
    t.make_signed_token(device)
    return t.serialize()

s = jws.JWS(json.dumps({"jti": str(uuid.uuid4()), "htm": "POST", "htu": url, "iat": int(time.time())}).encode())
s.add_signature(proof_key, None, json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": proof_key.export_public(as_dict=True)}))
proof = s.serialize(compact=True)

out = {"jkt": proof_key.thumbprint()}
for attempt in ("first", "replay"):
    r = requests.post(url, headers={"DPoP": proof}, verify=ca, data={
        "grant_type": "client_credentials", "client_id": dev_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion()})
    out[attempt] = {"status": r.status_code, "body": r.json()}
print(json.dumps(out))
`
	cmd := exec.Command(py, "-c", script, f.srv.URL+"/oauth/token", d.id, string(devKey), ca)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python client: %v: %s", err, stderr)
	}
	var res struct {
		JKT   string `json:"jkt"`
		First struct {
			Status int            `json:"status"`
			Body   map[string]any `json:"body"`
		} `json:"first"`
		Replay struct {
			Status int            `json:"status"`
			Body   map[string]any `json:"body"`
		} `json:"replay"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("python printed %s", out)
	}
	wantDPoPToken(t, "python client", res.First.Status, res.First.Body, res.JKT, "")
	wantOAuthError(t, "python client's replayed proof", res.Replay.Status, res.Replay.Body, "invalid_dpop_proof")
}
