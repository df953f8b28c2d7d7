package authority_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/client"
)

// Issue 15: the token endpoint's error answers (RFC 6749 §5.2) with stock
// clients: a missing grant_type or a JSON body is invalid_request (it was
// unsupported_grant_type), a repeated parameter is invalid_request, and a
// 401 to a client that tried HTTP Basic carries WWW-Authenticate.
func TestTokenEndpointErrors(t *testing.T) {
	f := newFixture(t)
	f.classes()
	f.keyDevice("speaker-1")
	form := "application/x-www-form-urlencoded"
	post := func(ctype, body, basic string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", f.srv.URL+"/oauth/token", strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if basic != "" {
			req.SetBasicAuth(basic, "secret")
		}
		resp, err := client.HTTPClient(f.fp).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("not JSON: %d %s", resp.StatusCode, b)
		}
		return resp.StatusCode, resp.Header, m
	}
	for _, tc := range []struct{ name, ctype, body string }{
		{"no grant_type", form, url.Values{"client_id": {"speaker-1"}}.Encode()},
		{"empty body", form, ""},
		{"JSON body", "application/json", `{"grant_type":"client_credentials","client_id":"speaker-1"}`},
		{"no content type", "", "grant_type=client_credentials&client_id=speaker-1"},
		{"grant_type twice", form, "grant_type=client_credentials&grant_type=refresh_token&client_id=speaker-1"},
		{"client_id twice", form, "grant_type=client_credentials&client_id=speaker-1&client_id=speaker-2"},
	} {
		if code, _, m := post(tc.ctype, tc.body, ""); code != 400 || m["error"] != "invalid_request" {
			t.Errorf("%s: %d %v, want 400 invalid_request", tc.name, code, m)
		}
	}
	if code, _, m := post(form, "grant_type=password", ""); code != 400 || m["error"] != "unsupported_grant_type" {
		t.Errorf("unknown grant_type: %d %v, want 400 unsupported_grant_type", code, m)
	}
	for _, body := range []string{"grant_type=client_credentials", "grant_type=client_credentials&client_id=speaker-1"} {
		code, hdr, m := post(form, body, "speaker-1")
		if code != 401 || m["error"] != "invalid_client" || hdr.Get("WWW-Authenticate") != `Basic realm="edgeid-authority"` {
			t.Errorf("HTTP Basic (%s): %d %v WWW-Authenticate %q", body, code, m, hdr.Get("WWW-Authenticate"))
		}
	}
	if code, hdr, _ := post(form, "grant_type=client_credentials&client_id=speaker-1", ""); code != 401 || hdr.Get("WWW-Authenticate") != "" {
		t.Errorf("no HTTP Basic: %d WWW-Authenticate %q, want none", code, hdr.Get("WWW-Authenticate"))
	}
}
