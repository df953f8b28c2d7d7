package edge_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/config"
)

// Sender-constrained tokens over HTTPS with stock clients: DPoP (RFC 9449)
// with a client of python3-jwcrypto and python3-requests
// (edge/testdata/dpop_client.py), and certificate-bound tokens (RFC 8705,
// cnf x5t#S256) with curl --cert.

// debianPython is the interpreter with Debian's python3-jwcrypto and
// python3-requests (a pyenv python3 on PATH lacks them).
const debianPython = "/usr/bin/python3"

type dpopAnswer struct {
	Status          int    `json:"status"`
	WWWAuthenticate string `json:"www_authenticate"`
	DPoPNonce       string `json:"dpop_nonce"`
	Body            string `json:"body"`
}

// dpopClient is edge/testdata/dpop_client.py with its key file.
type dpopClient struct {
	key, cacert string
}

func newDPoPClient(t *testing.T, g *gw) *dpopClient {
	t.Helper()
	if out, err := exec.Command(debianPython, "-c", "import jwcrypto, requests").CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s: install python3-jwcrypto python3-requests (.ci/run does)", debianPython, err, out)
	}
	return &dpopClient{key: filepath.Join(t.TempDir(), "dpop-key.json"), cacert: g.files.CACert}
}

func (c *dpopClient) run(t *testing.T, args ...string) []byte {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("testdata", "dpop_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(debianPython, append([]string{script, "--key", c.key}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpop_client.py %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// thumbprint is the client key's RFC 7638 thumbprint, as jwcrypto computes it.
func (c *dpopClient) thumbprint(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(string(c.run(t, "thumbprint")))
}

// send runs one request (two for modes replay and nonce), with extra
// options (--stream).
func (c *dpopClient) send(t *testing.T, mode, method, token, url, data string, extra ...string) []dpopAnswer {
	t.Helper()
	args := append([]string{"--cacert", c.cacert, "--token", token, "--method", method, "--mode", mode}, extra...)
	if data != "" {
		args = append(args, "--data", data)
	}
	out := c.run(t, append(args, url)...)
	var r struct{ Responses []dpopAnswer }
	if err := json.Unmarshal(out, &r); err != nil || len(r.Responses) == 0 {
		t.Fatalf("dpop_client.py printed %q: %v", out, err)
	}
	return r.Responses
}

// wantChallenge fails unless a is 401 with a WWW-Authenticate of scheme
// carrying error="code".
func wantChallenge(t *testing.T, what string, a dpopAnswer, scheme, code string) {
	t.Helper()
	if a.Status != 401 || !strings.HasPrefix(a.WWWAuthenticate, scheme+" ") || !strings.Contains(a.WWWAuthenticate, `error="`+code+`"`) {
		t.Errorf("%s: %d WWW-Authenticate %q, want 401 %s ... error=%q (body %s)", what, a.Status, a.WWWAuthenticate, scheme, code, a.Body)
	}
}

func TestHTTPDPoPStockClient(t *testing.T) {
	g := startHTTP(t)
	py := newDPoPClient(t, g)
	jkt := py.thumbprint(t)
	if len(jkt) != 43 {
		t.Fatalf("thumbprint %q", jkt)
	}
	tok := g.token("thermo-1", "alice", func(c map[string]any) { c["cnf"] = map[string]any{"jkt": jkt} })
	svc := g.telemetry(t)
	telemetry := g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp")
	status := g.httpURL("/v1/topics/devices/thermo-1/status")

	// The good request publishes: the MQTT subscriber gets it.
	if a := py.send(t, "good", "POST", tok, telemetry, "21.5")[0]; a.Status != 204 {
		t.Fatalf("DPoP publish: %d %s %s", a.Status, a.WWWAuthenticate, a.Body)
	}
	svc.expectMsg(t, "devices/thermo-1/telemetry/temp", "21.5")
	// And reads: a retained status, published and read back with proofs.
	if a := py.send(t, "good", "POST", tok, status+"?retain=1", "online")[0]; a.Status != 204 {
		t.Fatalf("DPoP retained publish: %d %s", a.Status, a.Body)
	}
	if a := py.send(t, "good", "GET", tok, status, "")[0]; a.Status != 200 || a.Body != "online" {
		t.Fatalf("DPoP read: %d %q", a.Status, a.Body)
	}

	// Each broken request is refused, and publishes nothing.
	for _, c := range []struct{ mode, scheme, code string }{
		{"noproof", "DPoP", "invalid_dpop_proof"},
		{"otherurl", "DPoP", "invalid_dpop_proof"},
		{"othermethod", "DPoP", "invalid_dpop_proof"},
		{"stale", "DPoP", "invalid_dpop_proof"},
		// A good proof of a key the token does not name: the token is
		// the one not good for this request.
		{"otherkey", "DPoP", "invalid_token"},
		// The bound token as a Bearer copy: it names a key, so say DPoP.
		{"bearer", "DPoP", "invalid_token"},
	} {
		a := py.send(t, c.mode, "POST", tok, telemetry, "broken-"+c.mode)[0]
		wantChallenge(t, c.mode, a, c.scheme, c.code)
	}
	// A replayed proof: the first use publishes, the second is refused.
	as := py.send(t, "replay", "POST", tok, telemetry, "replayed")
	if len(as) != 2 || as[0].Status != 204 {
		t.Fatalf("replay, first use: %+v", as)
	}
	wantChallenge(t, "replayed proof", as[1], "DPoP", "invalid_dpop_proof")
	if !strings.Contains(as[1].Body, "replay") && !strings.Contains(as[1].Body, "already") {
		t.Errorf("replayed proof refused without saying so: %s", as[1].Body)
	}
	svc.expectMsg(t, "devices/thermo-1/telemetry/temp", "replayed")
	if a := py.send(t, "good", "POST", tok, telemetry, "marker")[0]; a.Status != 204 {
		t.Fatalf("marker: %d %s", a.Status, a.Body)
	}
	onlyMarker(t, svc, "devices/thermo-1/telemetry/temp", "marker")
	if strings.Contains(g.logs.String(), tok) {
		t.Error("the token appears in the logs")
	}
}

func TestHTTPDPoPNonce(t *testing.T) {
	g := startHTTP(t, func(c *config.Config) { c.HTTP.DPoPNonce = true })
	py := newDPoPClient(t, g)
	tok := g.token("thermo-1", "alice", func(c map[string]any) { c["cnf"] = map[string]any{"jkt": py.thumbprint(t)} })
	svc := g.telemetry(t)
	as := py.send(t, "nonce", "POST", tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"), "with-nonce")
	wantChallenge(t, "proof without a nonce", as[0], "DPoP", "use_dpop_nonce")
	if as[0].DPoPNonce == "" {
		t.Fatalf("use_dpop_nonce without a DPoP-Nonce header: %+v", as[0])
	}
	if len(as) != 2 || as[1].Status != 204 {
		t.Fatalf("retry with the nonce: %+v", as)
	}
	svc.expectMsg(t, "devices/thermo-1/telemetry/temp", "with-nonce")
}

// TestHTTPDPoPEscapedPath: a proof's htu is the URL the client sent, with
// its percent-encoding: a topic or filter with '#', '?' or an encoded '/'
// in it is the same URL to both sides (RFC 9449 §4.3, RFC 3986 §6.2.2).
func TestHTTPDPoPEscapedPath(t *testing.T) {
	g := startHTTP(t)
	py := newDPoPClient(t, g)
	tok := g.token("thermo-1", "alice", func(c map[string]any) { c["cnf"] = map[string]any{"jkt": py.thumbprint(t)} })
	svc := g.telemetry(t)

	// An event stream on a filter ending in '#' (%23).
	a := py.send(t, "good", "GET", tok, g.httpURL("/v1/topics/devices/thermo-1/commands/%23"), "", "--stream")[0]
	if a.Status != 200 || !strings.Contains(a.Body, ": subscribed to devices/thermo-1/commands/#") {
		t.Errorf("DPoP event stream on .../commands/%%23: %d %q %s", a.Status, a.Body, a.WWWAuthenticate)
	}
	// A topic with '?' (%3F) in a level.
	if a := py.send(t, "good", "POST", tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/what%3F"), "q")[0]; a.Status != 204 {
		t.Errorf("DPoP publish on .../what%%3F: %d %s %s", a.Status, a.WWWAuthenticate, a.Body)
	} else {
		svc.expectMsg(t, "devices/thermo-1/telemetry/what?", "q")
	}
	// An encoded '/' (%2F): the proof names that URL, not .../a/b.
	if a := py.send(t, "good", "POST", tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/a%2Fb"), "slash")[0]; a.Status != 204 {
		t.Errorf("DPoP publish on .../a%%2Fb: %d %s %s", a.Status, a.WWWAuthenticate, a.Body)
	} else {
		svc.expectMsg(t, "devices/thermo-1/telemetry/a/b", "slash")
	}
	// And a proof for the decoded URL is not one for the encoded.
	if a := py.send(t, "otherurl", "POST", tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/what%3F"), "q")[0]; a.Status != 401 {
		t.Errorf("a proof for another URL: %d", a.Status)
	}
}

// TestHTTPCertificateBoundToken: a token bound to thermo-2's certificate
// (cnf x5t#S256, RFC 8705) over HTTPS with curl: taken with the
// certificate, refused without it.
func TestHTTPCertificateBoundToken(t *testing.T) {
	g := startHTTP(t)
	raw, err := os.ReadFile(g.files.DeviceCert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(leaf.Raw)
	bound := g.token("thermo-2", "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}
	})
	svc := g.telemetry(t)
	url := g.httpURL("/v1/topics/devices/thermo-2/telemetry/temp")

	code, body := g.curl(t, "--cert", g.files.DeviceCert, "--key", g.files.DeviceKey, "-X", "POST",
		"-H", "Authorization: Bearer "+bound, "--data-binary", "with-cert", url)
	if code != "204" {
		t.Fatalf("bound token with its certificate: %s %s", code, body)
	}
	svc.expectMsg(t, "devices/thermo-2/telemetry/temp", "with-cert")

	code, body = g.curl(t, "-i", "-X", "POST", "-H", "Authorization: Bearer "+bound, "--data-binary", "without-cert", url)
	if lb := strings.ToLower(body); code != "401" || !strings.Contains(lb, "www-authenticate: bearer") || !strings.Contains(lb, `error="invalid_token"`) {
		t.Fatalf("bound token without its certificate: %s %s", code, body)
	}
	// A DPoP-style use of it (no proof key named) is no better.
	code, _ = g.curl(t, "-X", "POST", "-H", "Authorization: DPoP "+bound, "--data-binary", "without-cert", url)
	if code != "401" {
		t.Fatalf("bound token as DPoP without its certificate: %s", code)
	}
	code, _ = g.curl(t, "--cert", g.files.DeviceCert, "--key", g.files.DeviceKey, "-X", "POST",
		"-H", "Authorization: Bearer "+bound, "--data-binary", "marker", url)
	if code != "204" {
		t.Fatalf("marker: %s", code)
	}
	onlyMarker(t, svc, "devices/thermo-2/telemetry/temp", "marker")
}
