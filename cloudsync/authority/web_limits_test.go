package authority_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
)

// Rate limits per client address: registration, the token endpoint,
// device authorization.

func TestRegisterRateLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := authority.DefaultLimits()
	l.Register = authority.Rate{Every: time.Hour, Burst: 3}
	srv := site(t, f, l)
	b := f.browserAt(srv.URL, "127.0.0.1")
	register := func(b *browser, name string) (*http.Response, string) {
		_, _, csrf := b.get("/register")
		return b.do("POST", "/register", url.Values{"csrf": {csrf}, "username": {name}, "email": {name + "@example.com"}, "password": {webPassword}})
	}
	for i := 0; i < 3; i++ {
		if resp, body := register(b, fmt.Sprintf("user%d", i)); resp.StatusCode != 200 {
			t.Fatalf("registration %d: %d\n%s", i, resp.StatusCode, body)
		}
	}
	resp, body := register(b, "user3")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "Too many registrations") || inputValue(body, "username") != "user3" {
		t.Fatalf("4th registration from one address: %d Retry-After %q\n%s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, err := f.a.Store.User("user3"); err == nil {
		t.Fatal("a refused registration made its user")
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 3500 || ra > 3600 {
		t.Errorf("Retry-After %d, want about an hour", ra)
	}
	// Another address registers.
	if resp, _ := register(f.browserAt(srv.URL, "127.0.0.2"), "user3"); resp.StatusCode != 200 {
		t.Fatalf("registration from another address: %d", resp.StatusCode)
	}
}

// oauthAt posts form to an OAuth endpoint of srv from ip, as a client
// with no credential would (the limit comes before authentication).
func oauthAt(t *testing.T, base, ip, path string, form url.Values) (*http.Response, map[string]any) {
	t.Helper()
	b := (&fixture{t: t}).browserAt(base, ip)
	b.c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	resp, err := b.c.PostForm(base+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp, m
}

func TestTokenAndDeviceAuthorizationRateLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	l := authority.DefaultLimits()
	l.Token = authority.Rate{Every: time.Minute, Burst: 3}
	l.DeviceAuthorization = authority.Rate{Every: 2 * time.Minute, Burst: 2}
	srv := site(t, f, l)
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody"}}
	for i := 0; i < 3; i++ {
		if resp, m := oauthAt(t, srv.URL, "127.0.0.1", "/oauth/token", cc); resp.StatusCode == 429 {
			t.Fatalf("token request %d: %d %v", i, resp.StatusCode, m)
		}
	}
	resp, m := oauthAt(t, srv.URL, "127.0.0.1", "/oauth/token", cc)
	if resp.StatusCode != 429 || m["error"] != "temporarily_unavailable" || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("4th token request: %d %v Retry-After %q", resp.StatusCode, m, resp.Header.Get("Retry-After"))
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 60 {
		t.Errorf("Retry-After %d, want at most a minute", ra)
	}
	// A device-code poll is told slow_down (RFC 8628 §3.5): it keeps polling, slower.
	resp, m = oauthAt(t, srv.URL, "127.0.0.1", "/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {"x"}, "client_id": {"nobody"}})
	if resp.StatusCode != 429 || m["error"] != "slow_down" {
		t.Fatalf("limited device-code poll: %d %v", resp.StatusCode, m)
	}
	// Another address is not limited.
	if resp, m := oauthAt(t, srv.URL, "127.0.0.2", "/oauth/token", cc); resp.StatusCode == 429 {
		t.Fatalf("token request from another address: %d %v", resp.StatusCode, m)
	}
	for i := 0; i < 2; i++ {
		if resp, m := oauthAt(t, srv.URL, "127.0.0.1", "/oauth/device_authorization", url.Values{"client_id": {"nobody"}}); resp.StatusCode == 429 {
			t.Fatalf("device authorization %d: %d %v", i, resp.StatusCode, m)
		}
	}
	resp, m = oauthAt(t, srv.URL, "127.0.0.1", "/oauth/device_authorization", url.Values{"client_id": {"nobody"}})
	if resp.StatusCode != 429 || m["error"] != "temporarily_unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("3rd device authorization: %d %v Retry-After %q", resp.StatusCode, m, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(f.logs.String(), "oauth request refused") {
		t.Error("limited requests not logged")
	}
}

// The default limits hold back a flood: past the burst, a token request
// from one address is refused.
func TestTokenRateLimitByDefault(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv := site(t, f, authority.DefaultLimits())
	burst := authority.DefaultLimits().Token.Burst
	cc := url.Values{"grant_type": {"client_credentials"}, "client_id": {"nobody"}}
	b := (&fixture{t: t}).browserAt(srv.URL, "127.0.0.3")
	refused := 0
	for i := 0; i < 3*burst && refused == 0; i++ {
		resp, err := b.c.PostForm(srv.URL+"/oauth/token", cc)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 429 {
			refused = i
		}
	}
	if refused < burst {
		t.Fatalf("first refusal at request %d, want one past the burst (%d) and its refill", refused, burst)
	}
}
