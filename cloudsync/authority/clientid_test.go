package authority_test

import (
	"crypto/tls"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Issue 15: the token endpoint told an unknown client_id ("unknown
// client_id") from a known one with a bad credential: ids could be probed.
// Both now get the same answer, for each way of authenticating.
func TestUnknownClientIDAnswersAsBadCredential(t *testing.T) {
	f := newFixture(t)
	f.classes()
	f.keyDevice("speaker-1")
	// thermo-1 has a certificate and no key.
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	stranger, _ := demo.NewIssuer("stranger", "stranger-key")
	assertion, _ := stranger.Mint(map[string]any{"iss": "x", "sub": "x", "aud": f.srv.URL + "/oauth/token", "jti": "j1"}, nil)
	files, _ := demo.WriteTLS(t.TempDir(), "someone")
	cert, _ := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	for _, tc := range []struct {
		name string
		form url.Values
		cert *tls.Certificate
	}{
		{"client assertion", url.Values{"client_assertion_type": {authority.ClientAssertionType}, "client_assertion": {assertion}}, nil},
		{"certificate", url.Values{}, &cert},
		{"no credential", url.Values{}, nil},
	} {
		answer := func(id string) (int, map[string]any) {
			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}}
			for k, v := range tc.form {
				form[k] = v
			}
			return f.postToken(form, tc.cert)
		}
		kc, known := answer("speaker-1")
		if kc != 401 || known["error"] != "invalid_client" {
			t.Fatalf("%s, known id: %d %v", tc.name, kc, known)
		}
		for _, id := range []string{"no-such-device", "thermo-1"} {
			uc, unknown := answer(id)
			if uc != kc || unknown["error"] != known["error"] || unknown["error_description"] != known["error_description"] {
				t.Errorf("%s: %s answered %d %v, a known id with a bad credential %d %v", tc.name, id, uc, unknown, kc, known)
			}
		}
	}
}
