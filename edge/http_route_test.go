package edge_test

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/config"
)

// Protected routes (http.routes) to a local service: the service gets the
// verified identity in X-EdgeID-* headers and never the caller's
// credentials or its own X-EdgeID-* headers; a request the route does not
// authorize never reaches it.

// upstream is an httptest service that records what reaches it.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(r.Context()))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("upstream " + r.Method + " " + r.URL.RequestURI()))
	}))
	t.Cleanup(u.Close)
	return u
}

// requests is what reached the upstream so far.
func (u *upstream) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.seen...)
}

// edgeidHeaders are the request's headers that an upstream could read as
// X-EdgeID-*: any case, and with '_' for '-' (CGI, WSGI and PHP map both to
// HTTP_X_EDGEID_*).
func edgeidHeaders(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-edgeid-") {
			out[k] = v
		}
	}
	return out
}

func withRoutes(routes ...config.HTTPRoute) gwOpt {
	return func(c *config.Config) { c.HTTP.Routes = routes }
}

func TestHTTPProtectedRoute(t *testing.T) {
	up := newUpstream(t)
	g := startHTTP(t, withRoutes(
		config.HTTPRoute{Prefix: "/api/heating/", Upstream: up.URL + "/svc/", Scope: "heating:write"},
		config.HTTPRoute{Prefix: "/api/open/", Upstream: up.URL + "/open/"}))
	scoped := g.token("thermo-1", "alice", func(c map[string]any) { c["scope"] = c["scope"].(string) + " heating:write" })
	unscoped := g.token("thermo-1", "alice", nil)
	spoof := []string{"-H", "X-EdgeID-Subject: mallory", "-H", "x-edgeid-device: thermo-9", "-H", "X-EdgeID-Scope: admin",
		"-H", "X-Edgeid-Method: certificate", "-H", "X-EdgeID-Extra: 1", "-H", "X_EdgeID_Subject: mallory", "-H", "x_edgeid_client: evil"}

	// Authorized: forwarded with the identity, without the credentials.
	code, body := g.curl(t, append([]string{"-X", "PUT", "-H", "Authorization: Bearer " + scoped, "--data", "21",
		g.httpURL("/api/heating/rooms/1?mode=eco")}, spoof...)...)
	if code != "200" || body != "upstream PUT /svc/rooms/1?mode=eco" {
		t.Fatalf("authorized request: %s %q", code, body)
	}
	rs := up.requests()
	if len(rs) != 1 {
		t.Fatalf("%d requests reached the upstream", len(rs))
	}
	r := rs[0]
	want := map[string]string{"X-EdgeID-Subject": "alice", "X-EdgeID-Device": "thermo-1", "X-EdgeID-Client": "thermo-1", "X-EdgeID-Method": "token"}
	for k, v := range want {
		if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if sc := r.Header.Get("X-EdgeID-Scope"); !strings.Contains(" "+sc+" ", " heating:write ") || strings.Contains(sc, "admin") {
		t.Errorf("upstream X-EdgeID-Scope = %q", sc)
	}
	got := edgeidHeaders(r.Header)
	if len(got) != 5 {
		t.Errorf("upstream got X-EdgeID headers %v; want only the gateway's five", got)
	}
	for _, h := range []string{"Authorization", "DPoP", "Proxy-Authorization"} {
		if v := r.Header.Values(h); len(v) > 0 {
			t.Errorf("upstream got the caller's %s: %q", h, v)
		}
	}

	// A DPoP request (python3-jwcrypto's proof): the proof stays at the gateway too.
	py := newDPoPClient(t, g)
	bound := g.token("thermo-1", "alice", func(c map[string]any) {
		c["scope"] = c["scope"].(string) + " heating:write"
		c["cnf"] = map[string]any{"jkt": py.thumbprint(t)}
	})
	if a := py.send(t, "good", "GET", bound, g.httpURL("/api/heating/rooms/2"), "")[0]; a.Status != 200 || a.Body != "upstream GET /svc/rooms/2" {
		t.Fatalf("DPoP request: %d %q %s", a.Status, a.Body, a.WWWAuthenticate)
	}
	rs = up.requests()
	if len(rs) != 2 {
		t.Fatalf("%d requests reached the upstream", len(rs))
	}
	if v := rs[1].Header.Values("DPoP"); len(v) > 0 || rs[1].Header.Get("Authorization") != "" {
		t.Errorf("upstream got the DPoP request's credentials: DPoP %q Authorization %q", v, rs[1].Header.Get("Authorization"))
	}

	// Refused requests never reach it.
	code, body = g.curl(t, "-i", "-H", "Authorization: Bearer "+unscoped, g.httpURL("/api/heating/rooms/1"))
	if code != "403" || !strings.Contains(body, `error="insufficient_scope"`) || !strings.Contains(body, "heating:write") {
		t.Errorf("token without the route's scope: %s %s", code, body)
	}
	code, body = g.curl(t, "-i", g.httpURL("/api/heating/rooms/1"))
	if lb := strings.ToLower(body); code != "401" || !strings.Contains(lb, "www-authenticate: bearer") {
		t.Errorf("no credential: %s %s", code, body)
	}
	code, body = g.curl(t, "-H", "Authorization: Bearer not.a.token", g.httpURL("/api/heating/rooms/1"))
	if code != "401" || !strings.Contains(body, "invalid_token") {
		t.Errorf("bad token: %s %s", code, body)
	}
	// A device certificate alone is a credential, but carries no scope.
	code, body = g.curl(t, "--cert", g.files.DeviceCert, "--key", g.files.DeviceKey, g.httpURL("/api/heating/rooms/1"))
	if code != "403" || !strings.Contains(body, "insufficient_scope") {
		t.Errorf("certificate on a scoped route: %s %s", code, body)
	}
	if n := len(up.requests()); n != 2 {
		t.Fatalf("%d requests reached the upstream; the refused ones must not", n)
	}

	// A route without a scope takes the certificate, and says so.
	code, body = g.curl(t, append([]string{"--cert", g.files.DeviceCert, "--key", g.files.DeviceKey, g.httpURL("/api/open/x")}, spoof...)...)
	if code != "200" || body != "upstream GET /open/x" {
		t.Fatalf("certificate on an open route: %s %q", code, body)
	}
	rs = up.requests()
	r = rs[len(rs)-1]
	if r.Header.Get("X-EdgeID-Device") != "thermo-2" || r.Header.Get("X-EdgeID-Method") != "certificate" || r.Header.Get("X-EdgeID-Subject") != "" {
		t.Errorf("certificate identity: %v", edgeidHeaders(r.Header))
	}
	if got := edgeidHeaders(r.Header); len(got) != 2 {
		t.Errorf("upstream got X-EdgeID headers %v; want the gateway's device and method only", got)
	}
}

// TestHTTPRouteKeepsUpstreamConnections: requests in flight together
// through a route reuse the gateway's connections to the upstream rather
// than open one each (http.DefaultTransport keeps only 2 idle per host).
func TestHTTPRouteKeepsUpstreamConnections(t *testing.T) {
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // keep requests overlapping
		_, _ = w.Write([]byte("ok"))
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	g := startHTTP(t, withRoutes(config.HTTPRoute{Prefix: "/api/open/", Upstream: up.URL + "/"}))
	tok := g.token("thermo-1", "alice", nil)
	// curl --parallel: 8 at a time, 400 requests, multiplexed on one
	// HTTP/2 connection to the gateway.
	args := []string{"-s", "--cacert", g.files.CACert, "--parallel", "--parallel-max", "8", "-H", "Authorization: Bearer " + tok,
		"-w", "%{http_code}\n"}
	const n = 400
	for i := range n {
		args = append(args, g.httpURL(fmt.Sprintf("/api/open/r%d", i)), "-o", "/dev/null")
	}
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	if c := strings.Count(string(out), "200\n"); c != n {
		t.Fatalf("%d of %d requests answered 200: %s", c, n, out)
	}
	// At most one per request in flight (8), with room for a busy machine.
	if c := conns.Load(); c > 32 {
		t.Errorf("%d requests through the route opened %d connections to the upstream", n, c)
	}
}

// TestHTTPRoutePathStaysUnderUpstream: a route forwards under its upstream
// path only: encoded dot segments (%2E%2E, ..%2F) are refused, never sent
// on for the upstream to resolve outside it, and an encoded '/' stays
// encoded.
func TestHTTPRoutePathStaysUnderUpstream(t *testing.T) {
	up := newUpstream(t)
	g := startHTTP(t, withRoutes(config.HTTPRoute{Prefix: "/api/open/", Upstream: up.URL + "/svc/"}))
	auth := "Authorization: Bearer " + g.token("thermo-1", "alice", nil)
	for _, p := range []string{"/api/open/..%2F..%2Fsecret", "/api/open/%2E%2E/secret", "/api/open/%2e%2e%2fsecret", "/api/open/a/%2E%2E/%2E%2E/secret", "/api/open/.%2E/secret", "/api/open/%2E/x"} {
		code, body := g.curl(t, "--path-as-is", "-H", auth, g.httpURL(p))
		if code != "400" || !strings.Contains(body, "dot segment") {
			t.Errorf("%s: %s %s, want 400", p, code, body)
		}
	}
	// A literal ../ is ServeMux's to clean: redirected, never forwarded.
	if code, body := g.curl(t, "--path-as-is", "-H", auth, g.httpURL("/api/open/x/../../secret")); code[0] != '3' {
		t.Errorf("literal ../: %s %s", code, body)
	}
	if rs := up.requests(); len(rs) != 0 {
		t.Fatalf("the upstream got %s", rs[0].RequestURI)
	}
	code, body := g.curl(t, "-H", auth, g.httpURL("/api/open/a%2Fb/c..d/x?q=1"))
	if code != "200" || body != "upstream GET /svc/a%2Fb/c..d/x?q=1" {
		t.Errorf("encoded path: %s %q", code, body)
	}
}
