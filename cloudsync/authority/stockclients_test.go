package authority_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/store"
)

// Issue 15, done when: stock OAuth clients complete pairing (RFC 8628, the
// owner's approval is a.DecidePairing) and refresh with their defaults, the
// device authenticating with private_key_jwt or mutual TLS. What a library
// has no call for is said where the script does it by hand.

// pairingScript runs a Python script that prints "user_code <code>" once
// it has one, then its result as JSON on the last line; the test approves
// the code for owner as soon as it is printed. requests trusts the test
// authority's certificate through REQUESTS_CA_BUNDLE, its default way: a
// bundle named in the environment wins over a session's verify (requests
// issue 3829), so one set there for the host would break the scripts.
func (f *fixture) pairingScript(t *testing.T, py, script, owner string, args ...string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-c", script}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REQUESTS_CA_BUNDLE=") && !strings.HasPrefix(kv, "CURL_CA_BUNDLE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "REQUESTS_CA_BUNDLE="+f.caFile())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if code, ok := strings.CutPrefix(line, "user_code "); ok {
			if err := f.a.DecidePairing(code, owner, true); err != nil {
				t.Errorf("approve %s: %v", code, err)
			}
			continue
		}
		last = line
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python: %v\n%s%s", err, last, stderr.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil {
		t.Fatalf("python printed %q (%v)\n%s", last, err, stderr.String())
	}
	return m
}

// wantPaired checks a token answer of a paired device: an access token
// acting for owner, issued to device, and a refresh token.
func wantPaired(t *testing.T, what string, tok any, device, owner string) (access, refresh string) {
	t.Helper()
	m, _ := tok.(map[string]any)
	access, _ = m["access_token"].(string)
	refresh, _ = m["refresh_token"].(string)
	if access == "" || refresh == "" {
		t.Fatalf("%s: %v", what, tok)
	}
	if c := decodeClaims(t, access); c["sub"] != owner || c["client_id"] != device {
		t.Fatalf("%s: claims %v", what, c)
	}
	return access, refresh
}

// TestStockAuthlibDeviceFlow: Authlib's OAuth2Session with its stock
// PrivateKeyJWT (an assertion an hour long, no client_id needed) pairs,
// refreshes, and revokes its refresh token (RFC 7009, the same client
// authentication). Authlib has no call for the device authorization
// request (RFC 8628 §3.1) nor a polling loop: the script posts the first
// with the session's client authentication and polls with fetch_token at
// the interval it was told.
func TestStockAuthlibDeviceFlow(t *testing.T) {
	t.Parallel()
	py := authlibPython(t)
	f := newFixtureWith(t, func(c *authority.Config) { c.PairingPollInterval = time.Second })
	f.classes()
	d := f.keyDevice("speaker-authlib")
	devKey, err := json.Marshal(d.key.Key)
	if err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, time
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
url, dev_id, dev_key = sys.argv[1:4]
token_url = url + "/oauth/token"
auth = PrivateKeyJWT(token_url, alg="ES256")
s = OAuth2Session(dev_id, json.loads(dev_key), token_endpoint_auth_method=auth, revocation_endpoint_auth_method=auth)
r = s.post(url + "/oauth/device_authorization", data={"client_id": dev_id}, auth=s.client_auth(auth), withhold_token=True)
r.raise_for_status()
da = r.json()
print("user_code " + da["user_code"], flush=True)
interval, answers = da["interval"], []
deadline = time.time() + 30
while True:
    time.sleep(interval)
    try:
        tok = s.fetch_token(token_url, grant_type="urn:ietf:params:oauth:grant-type:device_code", device_code=da["device_code"])
        break
    except Exception as e:
        err = getattr(e, "error", None)
        answers.append(err)
        if err == "slow_down":
            interval += 5
        elif err != "authorization_pending" or time.time() > deadline:
            raise
first = dict(tok)
refreshed = dict(s.refresh_token(token_url))
r = s.revoke_token(url + "/oauth/revoke", token=refreshed["refresh_token"], token_type_hint="refresh_token")
revoke_status = r.status_code
try:
    s.refresh_token(token_url, refresh_token=refreshed["refresh_token"])
    after = "refreshed"
except Exception as e:
    after = getattr(e, "error", str(e))
print(json.dumps({"first": first, "refreshed": refreshed, "answers": answers, "revoke": revoke_status, "after_revoke": after}))
`
	res := f.pairingScript(t, py, script, "alice", f.srv.URL, d.id, string(devKey))
	_, rt1 := wantPaired(t, "authlib pairing", res["first"], d.id, "alice")
	at2, rt2 := wantPaired(t, "authlib refresh", res["refreshed"], d.id, "alice")
	if rt2 == rt1 {
		t.Fatal("the refresh token was not rotated")
	}
	for _, a := range res["answers"].([]any) {
		if a != "authorization_pending" && a != "slow_down" {
			t.Errorf("poll answers %v: want only authorization_pending (or slow_down, honoured)", res["answers"])
		}
	}
	if res["revoke"] != float64(200) || res["after_revoke"] != "invalid_grant" {
		t.Fatalf("authlib revocation: %v, refresh afterwards %v", res["revoke"], res["after_revoke"])
	}
	if f.introspect(at2)["active"] != false {
		t.Fatal("the access token of the revoked grant is still active")
	}
}

// TestStockRequestsOAuthlibDeviceFlow: requests-oauthlib's OAuth2Session
// with oauthlib's DeviceClient, the device authenticating by its
// certificate (requests' cert, set on the session: fetch_token passes its
// extra arguments into the form, and refresh_token takes no cert, so a
// per-call cert= cannot reach them). With its defaults fetch_token sends
// the client_id as HTTP Basic with an empty password and refresh_token no
// client_id at all; the pinned certificate names the device. It has no
// call for the device authorization request nor a polling loop: the script
// posts the first and polls with fetch_token.
func TestStockRequestsOAuthlibDeviceFlow(t *testing.T) {
	t.Parallel()
	py := authlibPython(t)
	if out, err := exec.Command(py, "-c", "import requests_oauthlib, oauthlib.oauth2").CombinedOutput(); err != nil {
		t.Fatalf("%s lacks requests_oauthlib (%v: %s): install python3-requests-oauthlib (.ci/run does)", py, err, out)
	}
	f := newFixtureWith(t, func(c *authority.Config) { c.PairingPollInterval = time.Second })
	f.classes()
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: f.tls.DeviceFingerprint}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	script := `
import json, sys, time
from oauthlib.oauth2 import DeviceClient
from requests_oauthlib import OAuth2Session
url, dev_id, cert, key = sys.argv[1:5]
token_url = url + "/oauth/token"
s = OAuth2Session(client=DeviceClient(dev_id))
s.cert = (cert, key)
r = s.post(url + "/oauth/device_authorization", data={"client_id": dev_id})
r.raise_for_status()
da = r.json()
print("user_code " + da["user_code"], flush=True)
interval, answers = da["interval"], []
deadline = time.time() + 30
while True:
    time.sleep(interval)
    try:
        tok = s.fetch_token(token_url, device_code=da["device_code"])
        break
    except Exception as e:
        err = getattr(e, "error", None)
        answers.append(err)
        if err == "slow_down":
            interval += 5
        elif err != "authorization_pending" or time.time() > deadline:
            raise
first = dict(tok)
refreshed = dict(s.refresh_token(token_url))
print(json.dumps({"first": first, "refreshed": refreshed, "answers": answers}))
`
	res := f.pairingScript(t, py, script, "alice", f.srv.URL, "dev-1", f.tls.DeviceCert, f.tls.DeviceKey)
	at1, rt1 := wantPaired(t, "requests-oauthlib pairing", res["first"], "dev-1", "alice")
	at2, rt2 := wantPaired(t, "requests-oauthlib refresh", res["refreshed"], "dev-1", "alice")
	if rt2 == rt1 {
		t.Fatal("the refresh token was not rotated")
	}
	for _, tok := range []string{at1, at2} {
		cnf, _ := decodeClaims(t, tok)["cnf"].(map[string]any)
		if cnf["x5t#S256"] == nil {
			t.Fatalf("token not bound to the certificate: %v", decodeClaims(t, tok))
		}
	}
	for _, a := range res["answers"].([]any) {
		if a != "authorization_pending" && a != "slow_down" {
			t.Errorf("poll answers %v: want only authorization_pending (or slow_down, honoured)", res["answers"])
		}
	}
}

// assertionTransport adds a fresh client assertion (RFC 7523, a new jti
// each time) to every form it posts to the authority's token and device
// authorization endpoints: golang.org/x/oauth2 has no private_key_jwt.
type assertionTransport struct {
	next    http.RoundTripper
	d       *keyDevice
	onToken func(answer map[string]any) // after each token-endpoint answer

	mu sync.Mutex
	n  int
}

func (a *assertionTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	path := r.URL.Path
	if r.Method != http.MethodPost || (path != "/oauth/token" && path != "/oauth/device_authorization") {
		return a.next.RoundTrip(r)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r.Body.Close()
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.n++
	jti := fmt.Sprintf("x-oauth2-%d-%d", time.Now().UnixNano(), a.n)
	a.mu.Unlock()
	now := time.Now()
	assertion, err := a.d.key.Mint(map[string]any{"iss": a.d.id, "sub": a.d.id, "aud": a.d.f.srv.URL + "/oauth/token",
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": jti}, nil)
	if err != nil {
		return nil, err
	}
	form.Set("client_assertion_type", authority.ClientAssertionType)
	form.Set("client_assertion", assertion)
	enc := form.Encode()
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(strings.NewReader(enc))
	r.ContentLength = int64(len(enc))
	r.Header.Set("Content-Length", strconv.Itoa(len(enc)))
	resp, err := a.next.RoundTrip(r)
	if err != nil || path != "/oauth/token" || a.onToken == nil {
		return resp, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	a.onToken(m)
	return resp, nil
}

// TestStockGolangOAuth2PrivateKeyJWT: golang.org/x/oauth2 drives the device
// flow (DeviceAuth, DeviceAccessToken) and the refresh (its TokenSource) as
// a device authenticating with private_key_jwt, through a RoundTripper that
// adds a fresh client assertion to each form post.
func TestStockGolangOAuth2PrivateKeyJWT(t *testing.T) {
	t.Parallel()
	f := newFixtureWith(t, func(c *authority.Config) { c.PairingPollInterval = time.Second })
	f.classes()
	d := f.keyDevice("speaker-go")
	hc := client.HTTPClient(f.fp)
	var userCode string
	var mu sync.Mutex
	var answers []string
	tr := &assertionTransport{next: hc.Transport, d: d}
	tr.onToken = func(m map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		e, _ := m["error"].(string)
		answers = append(answers, e)
		if len(answers) == 1 {
			if err := f.a.DecidePairing(userCode, "alice", true); err != nil {
				t.Errorf("approve: %v", err)
			}
		}
	}
	hc.Transport = tr
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), oauth2.HTTPClient, hc), 30*time.Second)
	defer cancel()
	conf := &oauth2.Config{ClientID: d.id, Endpoint: oauth2.Endpoint{
		DeviceAuthURL: f.srv.URL + "/oauth/device_authorization",
		TokenURL:      f.srv.URL + "/oauth/token",
		AuthStyle:     oauth2.AuthStyleInParams,
	}}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	userCode = da.UserCode
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatalf("device access token: %v (answers %q)", err, answers)
	}
	wantPaired(t, "x/oauth2 pairing", map[string]any{"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken}, d.id, "alice")
	// Refresh as x/oauth2 does when a token has expired.
	stale := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}
	fresh, err := conf.TokenSource(ctx, stale).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	wantPaired(t, "x/oauth2 refresh", map[string]any{"access_token": fresh.AccessToken, "refresh_token": fresh.RefreshToken}, d.id, "alice")
	if fresh.RefreshToken == tok.RefreshToken || fresh.AccessToken == tok.AccessToken {
		t.Fatal("refresh gave the same tokens")
	}
	mu.Lock()
	defer mu.Unlock()
	// x/oauth2 polls on a ticker: a first poll answered late (a loaded
	// machine) can make the next one early enough for slow_down, which it
	// honours; the flow completes either way.
	n := len(answers)
	if n < 3 || answers[0] != "authorization_pending" || answers[n-2] != "" || answers[n-1] != "" {
		t.Fatalf("token endpoint answers %q, want authorization_pending, then the token and the refresh", answers)
	}
	for _, a := range answers[1 : n-2] {
		if a != "authorization_pending" && a != "slow_down" {
			t.Fatalf("token endpoint answers %q", answers)
		}
	}
}
