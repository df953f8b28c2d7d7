package authority_test

import (
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
assert md["revocation_endpoint_auth_methods_supported"] == ["Bearer"], md
assert md["introspection_endpoint_auth_methods_supported"] == ["Bearer"], md
print("ok")
`
	out := runPython(t, py, script, f.srv.URL, f.caFile())
	t.Logf("authlib: %s", out)
}
