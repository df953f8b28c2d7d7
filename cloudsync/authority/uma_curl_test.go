package authority_test

import (
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
)

// curl runs the real curl with args (trusting the test authority's
// certificate, no proxy) and returns the HTTP status and the body.
func curl(t *testing.T, ca string, args ...string) (int, string) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	args = append([]string{"--silent", "--show-error", "--noproxy", "*", "--max-time", "20", "--cacert", ca, "--write-out", "\n%{http_code}"}, args...)
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("curl %s: %v: %s%s", strings.Join(args, " "), err, out, stderr)
	}
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndex(s, "\n")
	code, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("curl: no status in %q", s)
	}
	return code, s[:max(i, 0)]
}

// The UMA exchange as the specifications write it, with curl as the client
// (no project code on the client side): discovery (UMA 2.0 Grant §2), the
// token request with the ticket the resource server got (§3.3.1, the client
// authenticated by its certificate, RFC 8705), and each answer: an RPT
// (§3.3.5), invalid_grant for a used or unknown ticket, request_submitted
// with the ticket and interval (§3.3.6), the RPT once the owner approves.
// The gateway's part (the permission endpoint, UMA Federated Authorization
// §4) is played by the test as the resource server.
func TestUMAWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	u := newUMA(t, nil)
	ca := u.caFile()
	svc := u.service("svc-curl")
	u.share("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}},
		Grantee: "svc-curl", GranteeKind: store.GranteeClient, Expires: time.Now().Add(time.Hour)})

	code, body := curl(t, ca, u.srv.URL+"/.well-known/uma2-configuration")
	var conf struct {
		Issuer                string   `json:"issuer"`
		TokenEndpoint         string   `json:"token_endpoint"`
		PermissionEndpoint    string   `json:"permission_endpoint"`
		GrantTypes            []string `json:"grant_types_supported"`
		ClaimTokenFormats     []string `json:"claim_token_formats_supported"`
		TokenEndpointAuthMeth []string `json:"token_endpoint_auth_methods_supported"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &conf) != nil || conf.Issuer != u.srv.URL || conf.TokenEndpoint == "" ||
		!strings.Contains(strings.Join(conf.GrantTypes, " "), authority.UMATicketGrant) ||
		!strings.Contains(strings.Join(conf.TokenEndpointAuthMeth, " "), "self_signed_tls_client_auth") {
		t.Fatalf("uma2-configuration: %d %s", code, body)
	}
	// The permission endpoint is the resource server's: a client is refused.
	code, body = curl(t, ca, "-H", "Content-Type: application/json", "-d", `{"resource_id":"thermo-1/telemetry","resource_scopes":["sub"]}`, conf.PermissionEndpoint)
	if code != 401 || !strings.Contains(body, `"error":"invalid_client"`) {
		t.Fatalf("permission endpoint without the gateway's credential: %d %s", code, body)
	}

	token := func(ticket string) (int, map[string]any) {
		t.Helper()
		code, body := curl(t, ca, "--cert", svc.files.DeviceCert, "--key", svc.files.DeviceKey,
			"-d", "grant_type="+authority.UMATicketGrant, "-d", "client_id=svc-curl", "-d", "ticket="+ticket, conf.TokenEndpoint)
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("token endpoint: %d %s", code, body)
		}
		return code, m
	}

	ticket := u.ticket("thermo-1/telemetry", "sub") // the resource server's 401 carried this
	code, m := token(ticket)
	if code != 200 || m["token_type"] != "Bearer" || m["access_token"] == nil || m["refresh_token"] != nil {
		t.Fatalf("RPT: %d %v", code, m)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(m["access_token"].(string), ".")[1])
	var claims struct {
		Sub         string            `json:"sub"`
		ClientID    string            `json:"client_id"`
		Cnf         map[string]string `json:"cnf"`
		Permissions []struct {
			ResourceID string   `json:"resource_id"`
			Scopes     []string `json:"resource_scopes"`
			Share      string   `json:"share"`
		} `json:"permissions"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Sub != "svc-curl" || claims.ClientID != "svc-curl" || claims.Cnf["x5t#S256"] != svc.x5t ||
		len(claims.Permissions) != 1 || claims.Permissions[0].ResourceID != "thermo-1/telemetry" || claims.Permissions[0].Share == "" {
		t.Fatalf("RPT claims: %s", payload)
	}

	code, m = token(ticket)
	if code != 400 || m["error"] != "invalid_grant" {
		t.Fatalf("the ticket used again: %d %v", code, m)
	}
	code, m = token("no-such-ticket")
	if code != 400 || m["error"] != "invalid_grant" || !strings.Contains(m["error_description"].(string), "ticket") {
		t.Fatalf("unknown ticket: %d %v", code, m)
	}

	ticket = u.ticket("thermo-1/status", "sub")
	code, m = token(ticket)
	if code != 403 || m["error"] != "request_submitted" || m["ticket"] != ticket || m["interval"] != float64(5) {
		t.Fatalf("a resource not shared: %d %v", code, m)
	}
	reqs, _ := u.a.Requests("alice")
	if len(reqs) != 1 {
		t.Fatalf("requests %+v", reqs)
	}
	if _, err := u.a.DecideRequest("alice", reqs[0].ID, true, time.Time{}, nil, "test"); err != nil {
		t.Fatal(err)
	}
	code, m = token(ticket)
	if code != 200 || m["access_token"] == nil {
		t.Fatalf("poll after the owner approved: %d %v", code, m)
	}

	// Without the certificate the client is not authenticated.
	code, body = curl(t, ca, "-d", "grant_type="+authority.UMATicketGrant, "-d", "client_id=svc-curl", "-d", "ticket="+u.ticket("thermo-1/telemetry", "sub"), conf.TokenEndpoint)
	if code != 401 || !strings.Contains(body, `"error":"invalid_client"`) {
		t.Fatalf("no client certificate: %d %s", code, body)
	}
}
