package edge_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// The UMA 2.0 exchange end to end with the real authority: a service alice
// shares her thermostat's telemetry with asks the gateway with no token and
// gets 401 with a ticket the authority's permission endpoint made for the
// gateway; it trades the ticket at the authority's token endpoint (found
// through its UMA discovery document) for an RPT; with the RPT its event
// stream gets the readings; alice revokes the share at the authority and,
// through the signed feed, the gateway ends the stream.
func TestShareUMAWithTheAuthority(t *testing.T) {
	t.Parallel()
	x := startAuthority(t)
	iss := testenv.Issuer(t) // thermo-1's tokens
	rec, err := iss.Record()
	if err != nil {
		t.Fatal(err)
	}
	files, err := demo.WriteTLS(t.TempDir(), "svc-1")
	if err != nil {
		t.Fatal(err)
	}
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
		Users: []store.User{{ID: "alice", Status: store.UserActive}},
		Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive},
			{ID: "svc-1", Class: "app", Status: store.DeviceActive, CertSHA256: files.DeviceFingerprint}}})
	sh, err := x.a.CreateShare("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}},
		Grantee: "svc-1", GranteeKind: store.GranteeClient}, "test")
	if err != nil {
		t.Fatal(err)
	}
	g := startHTTP(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-1") })
	g.iss = iss
	waitFor(t, "the share at the gateway", func() bool { _, err := g.g.Store.Grant(sh.ID); return err == nil })

	// 1. No token: 401 with the ticket and the authority's URL.
	code, out := g.curl(t, "-i", "-H", "Accept: text/event-stream", g.httpURL("/v1/topics/devices/thermo-1/telemetry/%23"))
	m := regexp.MustCompile(`UMA realm="edgeid", as_uri="([^"]+)", ticket="([^"]+)"`).FindStringSubmatch(header(out, "WWW-Authenticate"))
	if code != "401" || m == nil || m[1] != x.srv.URL {
		t.Fatalf("no token: %s\n%s", code, out)
	}
	asURI, ticket := m[1], m[2]

	// 2. The authority's token endpoint, from its discovery document; the
	// service authenticates with its certificate (and the RPT is bound to it).
	cert, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := syncclient.HTTPClient(x.fp)
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	var disco struct {
		TokenEndpoint      string `json:"token_endpoint"`
		PermissionEndpoint string `json:"permission_endpoint"`
	}
	getJSON(t, hc, asURI+"/.well-known/uma2-configuration", &disco)
	if disco.TokenEndpoint == "" || disco.PermissionEndpoint != asURI+"/uma/permission" {
		t.Fatalf("UMA discovery: %+v", disco)
	}
	resp, err := hc.PostForm(disco.TokenEndpoint, url.Values{"grant_type": {authority.UMATicketGrant}, "ticket": {ticket}, "client_id": {"svc-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 || tr.AccessToken == "" {
		t.Fatalf("RPT: %s %s %s", resp.Status, tr.Error, tr.Description)
	}

	// 3. The RPT (with its certificate) opens the stream; readings arrive.
	st := g.openStreamWith(t, "devices/thermo-1/telemetry/#", "-H", "Authorization: Bearer "+tr.AccessToken, "--cert", files.DeviceCert, "--key", files.DeviceKey)
	t1 := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	t1.publish(t, "devices/thermo-1/telemetry/temp", "19.5", 1)
	if l := st.waitLine(t, "data:"); !strings.Contains(l, "19.5") {
		t.Fatalf("event stream with the RPT: %s", l)
	}

	// 4. alice revokes the share at the authority: the stream ends.
	if err := x.a.RevokeShare("alice", sh.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if l := st.waitEnd(t); !strings.Contains(l, "share_revoked") {
		t.Errorf("end event after the revocation: %s", l)
	}
}

func getJSON(t *testing.T, hc *http.Client, u string, v any) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// openStreamWith is openStream with curl arguments of the caller's (the
// credential) and returns once the gateway said it subscribed.
func (g *gw) openStreamWith(t *testing.T, filter string, args ...string) *sse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	args = append([]string{"-s", "-N", "--cacert", g.files.CACert, "-H", "Accept: text/event-stream"}, args...)
	cmd := exec.CommandContext(ctx, "curl", append(args, g.httpURL("/v1/topics/"+strings.ReplaceAll(url.PathEscape(filter), "%2F", "/")))...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sse{lines: bufio.NewScanner(out)}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	s.waitLine(t, ": subscribed to "+filter)
	return s
}
