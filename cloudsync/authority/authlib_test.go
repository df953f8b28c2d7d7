package authority_test

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// authlibPython is Debian's python3 with Authlib (not a pyenv python3 on
// PATH, which lacks the modules).
func authlibPython(t *testing.T) string {
	t.Helper()
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import authlib, requests").CombinedOutput(); err != nil {
		t.Fatalf("%s lacks authlib or requests (%v: %s): install python3-authlib (.ci/run does)", py, err, out)
	}
	return py
}

// caFile writes the test authority's TLS certificate for Python's requests.
func (f *fixture) caFile() string {
	f.t.Helper()
	ca := filepath.Join(f.t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return ca
}

// runPython runs script with args, failing the test with its stderr.
func runPython(t *testing.T, py, script string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(py, append([]string{"-c", script}, args...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python: %v: %s%s", err, out, stderr)
	}
	return out
}

// TestMetadataAuthlib: Authlib's RFC 8414 validation of the authority's
// metadata passes.
func TestMetadataAuthlib(t *testing.T) {
	py := authlibPython(t)
	f := newFixture(t)
	script := `
import sys, requests
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
url, ca = sys.argv[1:3]
r = requests.get(url + "/.well-known/oauth-authorization-server", verify=ca)
r.raise_for_status()
md = AuthorizationServerMetadata(r.json())
md.validate()
# what the endpoints really accept: a pinned certificate, not a CA-issued one by subject
assert md["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "self_signed_tls_client_auth"], md
assert md["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "EdDSA"], md
# a device revokes its own tokens as it authenticates at the token
# endpoint; an admin key (Bearer) or a gateway (EdgeID-GW) any token
assert md["revocation_endpoint_auth_methods_supported"] == ["private_key_jwt", "self_signed_tls_client_auth", "Bearer", "EdgeID-GW"], md
assert md["revocation_endpoint_auth_signing_alg_values_supported"] == ["ES256", "EdDSA"], md
assert md["introspection_endpoint_auth_methods_supported"] == ["Bearer", "EdgeID-GW"], md
print("ok")
`
	out := runPython(t, py, script, f.srv.URL, f.caFile())
	t.Logf("authlib: %s", out)
}

// TestPrivateKeyJWTAuthlib: Authlib's OAuth2Session with its stock
// PrivateKeyJWT (an assertion living an hour, no client_id needed in the
// body) gets a client_credentials token for a registered device.
func TestPrivateKeyJWTAuthlib(t *testing.T) {
	py := authlibPython(t)
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("dev-authlib")
	devKey, err := json.Marshal(d.key.Key)
	if err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
url, dev_id, dev_key, ca = sys.argv[1:5]
token_url = url + "/oauth/token"
s = OAuth2Session(dev_id, json.loads(dev_key), token_endpoint_auth_method=PrivateKeyJWT(token_url, alg="ES256"))
s.verify = ca
tok = s.fetch_token(token_url, grant_type="client_credentials", verify=ca)
print(json.dumps(tok))
`
	out := runPython(t, py, script, f.srv.URL, d.id, string(devKey), f.caFile())
	var tok map[string]any
	if err := json.Unmarshal(out, &tok); err != nil || tok["access_token"] == nil {
		t.Fatalf("authlib token: %s (%v)", out, err)
	}
	if c := decodeClaims(t, tok["access_token"].(string)); c["client_id"] != "dev-authlib" {
		t.Fatalf("token claims %v", c)
	}
}
