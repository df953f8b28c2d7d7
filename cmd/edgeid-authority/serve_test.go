package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// served is an authority started by serve, in this process, as
// `edgeid-authority serve` with args would start it.
type served struct {
	Ready
	http *http.Client // pins the authority's certificate
	stop func()       // ends serve and waits for it
}

func startServe(t *testing.T, args ...string) *served {
	t.Helper()
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken)
	base := []string{"--state-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", "error"}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan Ready, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, append(base, args...), func(r Ready) { readyc <- r }) }()
	var s *served
	select {
	case r := <-readyc:
		s = &served{Ready: r, http: client.HTTPClient(r.Fingerprint)}
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("serve not ready after 30 s")
	}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		s.http.CloseIdleConnections() // else HTTP/2's graceful close waits a second for the client
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	}
	t.Cleanup(s.stop)
	return s
}

func (s *served) do(t *testing.T, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if strings.HasPrefix(path, "/admin/") {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *served) token(t *testing.T, form url.Values) (int, map[string]any) {
	t.Helper()
	code, body := s.do(t, "POST", "/oauth/token", "application/x-www-form-urlencoded", form.Encode())
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	return code, m
}

func (s *served) scrape(t *testing.T) string {
	t.Helper()
	if s.MetricsAddr == "" {
		t.Fatal("metrics are off")
	}
	resp, err := http.Get("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	return string(b)
}

// metric is the value of the series name{labels} in a scrape (labels as
// Prometheus writes them: sorted, quoted), or -1 if it is not there.
func metric(scrape, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func waitMetric(t *testing.T, s *served, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := metric(s.scrape(t), series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// /healthz answers on the public listener and beside /metrics.
func TestHealthz(t *testing.T) {
	s := startServe(t)
	if code, body := s.do(t, "GET", "/healthz", "", ""); code != 200 || body != "ok\n" {
		t.Errorf("public GET /healthz = %d %q, want 200 ok", code, body)
	}
	resp, err := http.Get("http://" + s.MetricsAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok\n" {
		t.Errorf("metrics listener GET /healthz = %d %q", resp.StatusCode, b)
	}
	if code, _ := s.do(t, "POST", "/healthz", "", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", code)
	}
}

// A store that no longer answers makes /healthz 503 with the reason, as does
// an authority shutting down; the scrape still answers, without the gauges
// it could not read.
func TestHealthz503(t *testing.T) {
	st, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	a, err := authority.New(Default().Authority("https://localhost"), st, log)
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(a, log)
	srv := httptest.NewServer(ops{next: authority.NewHandler(a, testToken), a: a, m: m})
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/healthz"); code != 503 || !strings.HasPrefix(body, "store: ") || !strings.Contains(strings.ToLower(body), "closed") {
		t.Errorf("GET /healthz with the store closed = %d %q, want 503 store: … closed", code, body)
	}
	rec := httptest.NewRecorder()
	m.handler(log).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "edgeid_authority_feed_head ") {
		t.Errorf("scrape with the store closed: %d\n%s", rec.Code, rec.Body)
	}
	for series, want := range map[string]float64{
		`edgeid_authority_http_requests_total{code="200",route="/healthz"}`: 1,
		`edgeid_authority_http_requests_total{code="503",route="/healthz"}`: 1,
	} {
		if v := metric(rec.Body.String(), series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}

	st2, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	a2, err := authority.New(Default().Authority("https://localhost"), st2, log)
	if err != nil {
		t.Fatal(err)
	}
	a2.Close()
	rec = httptest.NewRecorder()
	healthz(a2).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Errorf("GET /healthz while closing = %d %q, want 503 shutting down", rec.Code, rec.Body)
	}
}

// After real requests, /metrics counts them by route (the pattern, never
// the raw path) and code, and token requests by grant type and result; it
// is not served on the public listener.
func TestMetricsCountRequests(t *testing.T) {
	s := startServe(t)
	s.do(t, "GET", "/jwks.json", "", "")
	s.do(t, "GET", "/jwks.json", "", "")
	s.do(t, "GET", "/no/such/page-x1", "", "")
	if code, _ := s.do(t, "GET", "/admin/v1/devices/secret-device-id-42", "", ""); code != 404 {
		t.Fatalf("GET an unknown device: %d", code)
	}
	if code, _ := s.do(t, "GET", "/metrics", "", ""); code != 404 {
		t.Errorf("public GET /metrics = %d, want 404 (it is on metrics_listen only)", code)
	}
	// The token endpoint still reads the whole form after the wrapper looked
	// at it: the answer is about the client, not a missing grant_type.
	if code, m := s.token(t, url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody"}}); code != 401 || m["error"] != "invalid_client" {
		t.Fatalf("client_credentials from an unknown client = %d %v, want 401 invalid_client", code, m)
	}
	if code, m := s.token(t, url.Values{"client_id": {"nobody"}}); code != 400 || m["error"] != "invalid_request" {
		t.Fatalf("no grant_type = %d %v", code, m)
	}
	if code, m := s.token(t, url.Values{"grant_type": {"made-up-" + strings.Repeat("x", 40)}}); code != 400 || m["error"] != "unsupported_grant_type" {
		t.Fatalf("unknown grant_type = %d %v", code, m)
	}
	// A device that may call home gets a token: result ok.
	d := importKeyDevice(t, s, "thermo-9")
	if code, m := s.token(t, d.form(s.URL, url.Values{"grant_type": {"client_credentials"}})); code != 200 || m["access_token"] == nil {
		t.Fatalf("client_credentials of a registered device = %d %v", code, m)
	}

	got := s.scrape(t)
	for series, want := range map[string]float64{
		`edgeid_authority_http_requests_total{code="200",route="GET /jwks.json"}`:                        2,
		`edgeid_authority_http_requests_total{code="404",route="unmatched"}`:                             2, // the page and /metrics
		`edgeid_authority_http_requests_total{code="404",route="GET /admin/v1/devices/{id}"}`:            1,
		`edgeid_authority_http_requests_total{code="401",route="POST /oauth/token"}`:                     1,
		`edgeid_authority_http_requests_total{code="400",route="POST /oauth/token"}`:                     2,
		`edgeid_authority_http_requests_total{code="200",route="POST /oauth/token"}`:                     1,
		`edgeid_authority_http_requests_total{code="200",route="POST /admin/v1/import"}`:                 1,
		`edgeid_authority_token_requests_total{grant_type="client_credentials",result="invalid_client"}`: 1,
		`edgeid_authority_token_requests_total{grant_type="client_credentials",result="ok"}`:             1,
		`edgeid_authority_token_requests_total{grant_type="none",result="invalid_request"}`:              1,
		`edgeid_authority_token_requests_total{grant_type="other",result="unsupported_grant_type"}`:      1,
		`edgeid_authority_gateways`:      0,
		`edgeid_authority_event_streams`: 0,
	} {
		if v := metric(got, series); v != want {
			t.Errorf("%s = %v, want %v", series, v, want)
		}
	}
	for _, raw := range []string{"secret-device-id-42", "page-x1", "made-up-"} {
		if strings.Contains(got, raw) {
			t.Errorf("a raw request value %q is a label:\n%s", raw, got)
		}
	}
	rev, _ := s.Authority.Store.Rev()
	if v := metric(got, "edgeid_authority_feed_head"); rev < 2 || v != float64(rev) {
		t.Errorf("edgeid_authority_feed_head = %v, want the store's Rev %d (after an import)", v, rev)
	}
}

// An enrolled gateway's open event stream is counted while it is open, and
// the gateway among those enrolled.
func TestMetricsEventStreamsAndGateways(t *testing.T) {
	s := startServe(t)
	code, body := s.do(t, "POST", "/admin/v1/gateways", "application/json", `{"name":"gw-kitchen"}`)
	if code != 200 {
		t.Fatalf("add gateway: %d %s", code, body)
	}
	var add struct{ Code string }
	_ = json.Unmarshal([]byte(body), &add)
	e, err := client.Enroll(context.Background(), s.URL, s.Fingerprint, add.Code, "test-board")
	if err != nil {
		t.Fatal(err)
	}
	waitMetric(t, s, "edgeid_authority_gateways", 1)
	gst, err := store.Open(store.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer gst.Close()
	sy, err := client.NewSyncer(e, gst, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sy.Run(ctx) }()
	waitMetric(t, s, "edgeid_authority_event_streams", 1)
	waitMetric(t, s, "edgeid_authority_feed_lag", 0)
	cancel()
	<-done
	waitMetric(t, s, "edgeid_authority_event_streams", 0)
	// Two changes the stopped gateway has not been sent: it lags by two.
	for _, name := range []string{"lag-1", "lag-2"} {
		if code, body := s.do(t, "POST", "/admin/v1/import", "application/json", `{"classes":[{"name":"`+name+`","permissions":[]}]}`); code != 200 {
			t.Fatalf("import: %d %s", code, body)
		}
	}
	waitMetric(t, s, "edgeid_authority_feed_lag", 2)
	if v := metric(s.scrape(t), `edgeid_authority_http_requests_total{code="200",route="GET /sync/v1/events"}`); v < 1 {
		t.Errorf("the stream is not counted as a request once it ended: %v", v)
	}
}

// With metrics off there is no metrics listener; /healthz still answers.
func TestMetricsOff(t *testing.T) {
	s := startServe(t, "--metrics=off")
	if s.MetricsAddr != "" {
		t.Errorf("metrics off, but served at %s", s.MetricsAddr)
	}
	if code, _ := s.do(t, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("GET /healthz = %d", code)
	}
}

// serve tells systemd READY once it answers, and STOPPING on the way out.
func TestServeNotifiesSystemd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	s := startServe(t)
	buf := make([]byte, 4096)
	_ = sock.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := sock.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=serving "+s.URL {
		t.Fatalf("first datagram %q (%v), want READY=1 and the URL", buf[:n], err)
	}
	if code, _ := s.do(t, "GET", "/healthz", "", ""); code != 200 {
		t.Errorf("READY but GET /healthz = %d", code)
	}
	s.stop()
	n, err = sock.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("datagram at stop %q (%v), want STOPPING=1", buf[:n], err)
	}
}

// keyDevice is a registered device that authenticates with a client
// assertion (private_key_jwt).
type keyDevice struct {
	id  string
	key *demo.Issuer
}

func importKeyDevice(t *testing.T, s *served, id string) keyDevice {
	t.Helper()
	k, err := demo.NewIssuer(id, id+"-key")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	b, _ := json.Marshal(store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: id, Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	if code, body := s.do(t, "POST", "/admin/v1/import", "application/json", string(b)); code != 200 {
		t.Fatalf("import %s: %d %s", id, code, body)
	}
	return keyDevice{id: id, key: k}
}

func (d keyDevice) form(base string, f url.Values) url.Values {
	now := time.Now()
	a, _ := d.key.Mint(map[string]any{"iss": d.id, "sub": d.id, "aud": base + "/oauth/token", "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}, nil)
	f.Set("client_id", d.id)
	f.Set("client_assertion_type", authority.ClientAssertionType)
	f.Set("client_assertion", a)
	return f
}
