package authority_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/store"
)

// pollRecorder is a device's transport: it records the error of every
// token-endpoint answer, delays the first poll (jitter: a poll that reaches
// the server late makes the next one, sent on the client's ticker, arrive
// sooner than the interval after it) and calls approve after the second.
type pollRecorder struct {
	next    http.RoundTripper
	delay   time.Duration
	approve func()

	mu     sync.Mutex
	polls  int
	errors []string
}

func (p *pollRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.URL.Path, "/oauth/token") {
		return p.next.RoundTrip(r)
	}
	p.mu.Lock()
	p.polls++
	n := p.polls
	p.mu.Unlock()
	if n == 1 {
		time.Sleep(p.delay)
	}
	resp, err := p.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	p.mu.Lock()
	p.errors = append(p.errors, e.Error)
	p.mu.Unlock()
	if n == 2 {
		p.approve()
	}
	return resp, nil
}

// TestDeviceFlowGolangOAuth2 pairs a device with golang.org/x/oauth2's
// DeviceAuth and DeviceAccessToken, which poll on a ticker at exactly the
// interval: with a little network jitter, the server must not answer
// slow_down (which would grow the interval by 5 s each time).
func TestDeviceFlowGolangOAuth2(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *authority.Config) { c.PairingPollInterval = 2 * time.Second })
	f.classes()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	cert, err := tls.LoadX509KeyPair(f.tls.DeviceCert, f.tls.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := client.HTTPClient(f.fp)
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	var userCode string
	rec := &pollRecorder{next: hc.Transport, delay: 600 * time.Millisecond, approve: func() {
		if err := f.a.DecidePairing(userCode, "alice", true); err != nil {
			t.Errorf("approve: %v", err)
		}
	}}
	hc.Transport = rec
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	conf := &oauth2.Config{ClientID: "dev-1", Endpoint: oauth2.Endpoint{
		DeviceAuthURL: f.srv.URL + "/oauth/device_authorization",
		TokenURL:      f.srv.URL + "/oauth/token",
		AuthStyle:     oauth2.AuthStyleInParams,
	}}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if da.Interval != 2 {
		t.Fatalf("interval %d, want the configured 2 s", da.Interval)
	}
	userCode = da.UserCode
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("device access token: %v (answers %q)", err, rec.errors)
	}
	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token %+v", tok)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []string{"authorization_pending", "authorization_pending", ""}
	if strings.Join(rec.errors, ",") != strings.Join(want, ",") {
		t.Fatalf("poll answers %q, want %q (no slow_down for a client polling at the interval)", rec.errors, want)
	}
}
