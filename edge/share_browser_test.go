package edge_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/clock"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// The sharing journey in a real browser (headless Chromium) against the
// real authority and gateway: bob signs his phone app in to his account
// (pin & pair, golang.org/x/oauth2's device flow); alice shares her
// thermostat's telemetry with bob for a daily time window on her pages;
// bob's app is refused at the gateway with a UMA ticket, trades it at the
// authority's token endpoint for an RPT, and receives readings over MQTT and
// server-sent events; outside the window (the gateway's clock, a fake one)
// nothing is delivered, and delivery resumes when the window opens again;
// asked for what no share covers, the authority answers request_submitted
// until alice approves in her Requests page, then the same ticket gets an
// RPT; alice revokes the share on "Shared by me" and bob's live session is
// cut; a household member alice adds is refused outside the hours of her
// share.
func TestShareInTheBrowser(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests
	x := startAuthorityWith(t, func(c *authority.Config) { c.PairingPollInterval = time.Second })
	iss := testenv.Issuer(t) // thermo-1's own tokens
	rec, err := iss.Record()
	if err != nil {
		t.Fatal(err)
	}
	phone, err := demo.WriteTLS(t.TempDir(), "bob-phone")
	if err != nil {
		t.Fatal(err)
	}
	tablet, err := demo.WriteTLS(t.TempDir(), "kid-tablet")
	if err != nil {
		t.Fatal(err)
	}
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Issuers: []store.Issuer{rec},
		Devices: []store.Device{
			{ID: "bob-phone", Class: "app", Status: store.DeviceActive, CertSHA256: phone.DeviceFingerprint},
			{ID: "kid-tablet", Class: "app", Status: store.DeviceActive, CertSHA256: tablet.DeviceFingerprint}}})
	g := startHTTP(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-home") })
	g.iss = iss
	fake := clock.NewFake(time.Now())
	g.g.SetClock(fake)
	ctx := newBrowser(t)
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	register := func(user string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(chromedp.Navigate(x.srv.URL+"/register"),
			chromedp.SendKeys("#username", user), chromedp.SendKeys("#email", user+"@example.com"),
			chromedp.SendKeys("#password", "a good password of "+user), chromedp.Click("#register"), chromedp.WaitVisible("#login"))
	}
	login := func(user, password string) chromedp.Action[chromedp.Void] {
		return chromedp.Steps(chromedp.Navigate(x.srv.URL+"/login"),
			chromedp.SendKeys("#username", user), chromedp.SendKeys("#password", password), chromedp.Click("#login"),
			chromedp.WaitVisible("#nav-devices"))
	}
	logout := chromedp.Steps(chromedp.Click(chromedp.CSS(`form[action="/logout"] button`)), chromedp.WaitVisible("#login"))

	// bob registers and signs his phone app in to his account.
	do("bob registers", register("bob"), login("bob", "a good password of bob"))
	phoneClaim := signIn(t, x, phone, "bob-phone", func(code string) {
		do("bob approves his phone", chromedp.Navigate(x.srv.URL+"/device"), chromedp.SendKeys("#user_code", code),
			chromedp.Click("#continue"), chromedp.WaitVisible("#approve"), chromedp.Click("#approve"), chromedp.WaitVisible("#dev-bob-phone"))
	})
	do("bob logs out", logout)

	// alice registers; her thermostat is paired to her.
	do("alice registers", register("alice"), login("alice", "a good password of alice"))
	x.admin("POST", "/admin/v1/import", store.Batch{Devices: []store.Device{{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}})

	// alice shares thermo-1's telemetry with bob, every day from two
	// minutes ago to five minutes from now (the gateway's clock).
	now := fake.Now().In(time.Local)
	from, to := now.Add(-2*time.Minute).Format("15:04"), now.Add(5*time.Minute).Format("15:04")
	do("alice shares with bob", chromedp.Navigate(x.srv.URL+"/devices"), chromedp.Click("#share-link-thermo-1"),
		chromedp.WaitVisible("#share-form"), chromedp.Click("#kind-user"), chromedp.SendKeys(chromedp.CSS(`input[name=grantee]`), "bob"),
		chromedp.Click("#group-telemetry-sub"),
		chromedp.SetValue(chromedp.CSS(`input[name=window_from]`), from), chromedp.SetValue(chromedp.CSS(`input[name=window_to]`), to),
		chromedp.Click("#share-submit"), chromedp.WaitVisible("#notice"))
	shares, err := x.a.SharesBy("alice")
	if err != nil || len(shares) != 1 || shares[0].Window == nil || shares[0].Window.From != from || shares[0].Grantee != "bob" {
		t.Fatalf("alice's shares: %+v %v", shares, err)
	}
	telemetry := shares[0]
	waitFor(t, "the share and bob's phone at the gateway", func() bool {
		_, err := g.g.Store.Grant(telemetry.ID)
		d, _ := g.g.Store.Device("bob-phone")
		return err == nil && d.Owner == "bob"
	})

	// bob's phone asks the gateway with its own token: 401 and a ticket.
	hc := clientOf(t, x, phone)
	ticket, asURI := umaChallenge(t, g, phone, phoneClaim, "/v1/topics/devices/thermo-1/telemetry/temp")
	if asURI != x.srv.URL {
		t.Fatalf("as_uri %q, want the authority %q", asURI, x.srv.URL)
	}
	rpt := umaToken(t, hc, x.srv.URL, "bob-phone", ticket, phoneClaim, 200, "")

	// With the RPT: readings over MQTT (TLS, the phone's certificate: the
	// RPT is bound to it) and over an event stream.
	cert, err := tls.LoadX509KeyPair(phone.DeviceCert, phone.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	bobMQTT := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "bob-phone", token: rpt})
	if rc := bobMQTT.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("bob's subscription with the RPT: 0x%02x", rc[0])
	}
	if rc := bobMQTT.subscribe(t, "devices/thermo-1/commands/#"); rc[0] < 0x80 {
		t.Fatalf("bob subscribed to thermo-1's commands, which are not shared: 0x%02x", rc[0])
	}
	bobSSE := g.openStreamWith(t, "devices/thermo-1/telemetry/#", "-H", "Authorization: Bearer "+rpt, "--cert", phone.DeviceCert, "--key", phone.DeviceKey)
	thermo := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	thermo.publish(t, "devices/thermo-1/telemetry/temp", "21.0", 1)
	bobMQTT.expectMsg(t, "devices/thermo-1/telemetry/temp", "21.0")
	if l := bobSSE.waitLine(t, "data:"); !strings.Contains(l, "21.0") {
		t.Fatalf("bob's stream: %s", l)
	}

	// Outside the window nothing is delivered; the next day's window
	// delivers again (the subscription and the stream were kept).
	moveClock := func(to time.Time) {
		fake.Set(to)
		waitFor(t, "the gateway's re-check at "+to.String(), func() bool { return !g.g.SharesCheckedAt().Before(to) })
	}
	moveClock(now.Add(10 * time.Minute))
	thermo.publish(t, "devices/thermo-1/telemetry/outside", "outside the window", 1)
	moveClock(now.Add(24 * time.Hour))
	thermo.publish(t, "devices/thermo-1/telemetry/temp", "21.5", 1)
	bobMQTT.expectNoMsgBefore(t, "devices/thermo-1/telemetry/outside", "devices/thermo-1/telemetry/temp", "21.5")
	if l := bobSSE.waitLine(t, "data:"); !strings.Contains(l, "21.5") {
		t.Fatalf("bob's stream after the window reopened: %s (want 21.5, nothing from outside the window)", l)
	}

	// thermo-1's status is not shared: the authority asks alice, and the
	// same ticket gets an RPT once she approves on her Requests page.
	ticket2, _ := umaChallenge(t, g, phone, rpt, "/v1/topics/devices/thermo-1/status")
	umaToken(t, hc, x.srv.URL, "bob-phone", ticket2, phoneClaim, 403, "request_submitted")
	do("alice approves bob's request", chromedp.Navigate(x.srv.URL+"/requests"), chromedp.WaitVisible(chromedp.CSS(`[id^="approve-"]`)),
		chromedp.Click(chromedp.CSS(`button[id^="approve-"]`)), chromedp.WaitVisible("#notice"))
	rpt2 := umaToken(t, hc, x.srv.URL, "bob-phone", ticket2, phoneClaim, 200, "")
	statusSSE := g.openStreamWith(t, "devices/thermo-1/status", "-H", "Authorization: Bearer "+rpt2, "--cert", phone.DeviceCert, "--key", phone.DeviceKey)
	thermo.publish(t, "devices/thermo-1/status", "online", 1)
	if l := statusSSE.waitLine(t, "data:"); !strings.Contains(l, "online") {
		t.Fatalf("bob's status stream: %s", l)
	}

	// alice revokes the telemetry share: bob's live session is cut, his
	// stream ends, and the RPT is refused afterwards.
	do("alice revokes", chromedp.Navigate(x.srv.URL+"/shares"), chromedp.Click("#confirm-revoke-"+telemetry.ID),
		chromedp.Click("#revoke-"+telemetry.ID), chromedp.WaitNotPresent("#share-"+telemetry.ID))
	if rc := bobMQTT.expectDisconnect(t); rc != 0x87 {
		t.Fatalf("bob's session after the revocation: DISCONNECT 0x%02x, want 0x87", rc)
	}
	if l := bobSSE.waitEnd(t); !strings.Contains(l, "share_revoked") {
		t.Errorf("bob's stream end: %s", l)
	}
	if code, body := g.curl(t, "-H", "Authorization: Bearer "+rpt, "--cert", phone.DeviceCert, "--key", phone.DeviceKey,
		g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp")); code != "401" {
		t.Fatalf("the revoked share's RPT: %s %s, want 401", code, body)
	}

	// A household member, kid, with a share of the telemetry in the
	// evening only: refused now, outside its hours.
	do("alice adds kid", chromedp.Navigate(x.srv.URL+"/household"), chromedp.SendKeys(chromedp.CSS(`#member-form input[name=username]`), "kid"),
		chromedp.SendKeys(chromedp.CSS(`#member-form input[name=name]`), "Kid"),
		chromedp.SendKeys(chromedp.CSS(`#member-form input[name=password]`), "kid's own password"),
		chromedp.Click("#add-member"), chromedp.WaitVisible(chromedp.CSS(`[id="member-kid"]`)))
	now = fake.Now().In(time.Local)
	do("alice shares with kid", chromedp.Navigate(x.srv.URL+"/devices/thermo-1/share"), chromedp.WaitVisible("#share-form"),
		chromedp.Click("#kind-member"), chromedp.SetValue(chromedp.CSS(`select[name=member]`), "kid"), chromedp.Click("#group-telemetry-sub"),
		chromedp.SetValue(chromedp.CSS(`input[name=window_from]`), now.Add(time.Hour).Format("15:04")),
		chromedp.SetValue(chromedp.CSS(`input[name=window_to]`), now.Add(2*time.Hour).Format("15:04")),
		chromedp.Click("#share-submit"), chromedp.WaitVisible("#notice"), logout)
	kidShares, err := x.a.SharesWith("kid")
	if err != nil || len(kidShares) != 1 {
		t.Fatalf("kid's shares: %+v %v", kidShares, err)
	}
	do("kid logs in", login("kid", "kid's own password"))
	tabletClaim := signIn(t, x, tablet, "kid-tablet", func(code string) {
		do("kid approves the tablet", chromedp.Navigate(x.srv.URL+"/device"), chromedp.SendKeys("#user_code", code),
			chromedp.Click("#continue"), chromedp.WaitVisible("#approve"), chromedp.Click("#approve"), chromedp.WaitVisible("#dev-kid-tablet"))
	})
	waitFor(t, "kid's share and tablet at the gateway", func() bool {
		_, err := g.g.Store.Grant(kidShares[0].ID)
		d, _ := g.g.Store.Device("kid-tablet")
		return err == nil && d.Owner == "kid"
	})
	kidTicket, _ := umaChallenge(t, g, tablet, tabletClaim, "/v1/topics/devices/thermo-1/telemetry/temp")
	kidRPT := umaToken(t, clientOf(t, x, tablet), x.srv.URL, "kid-tablet", kidTicket, tabletClaim, 200, "")
	code, body := g.curl(t, "-H", "Authorization: Bearer "+kidRPT, "--cert", tablet.DeviceCert, "--key", tablet.DeviceKey,
		g.httpURL("/v1/topics/devices/thermo-1/telemetry/temp"))
	if code != "403" || !strings.Contains(body, "outside its hours") {
		t.Fatalf("kid outside her hours: %s %s, want 403 outside its hours", code, body)
	}
	kidCert, _ := tls.LoadX509KeyPair(tablet.DeviceCert, tablet.DeviceKey)
	kidMQTT := g.mustConnect(connOpts{tls: true, cert: &kidCert, clientID: "kid-tablet", token: kidRPT})
	if rc := kidMQTT.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] < 0x80 {
		t.Fatalf("kid subscribed outside her hours: 0x%02x", rc[0])
	}
	moveClock(now.Add(90 * time.Minute))
	if rc := kidMQTT.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("kid within her hours: SUBACK 0x%02x", rc[0])
	}
}

// clientOf is an HTTPS client of the authority with a client's certificate.
func clientOf(t *testing.T, x *authSrv, files demo.Files) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	hc := syncclient.HTTPClient(x.fp)
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	return hc
}

// signIn is an app's sign-in to its person's account: the device flow
// (RFC 8628) with golang.org/x/oauth2, the app authenticating with its
// certificate; approve is the person entering the code. It returns the
// access token (sub = the person, client_id = the app), the claim token of
// the app's UMA requests.
func signIn(t *testing.T, x *authSrv, files demo.Files, clientID string, approve func(code string)) string {
	t.Helper()
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, clientOf(t, x, files))
	conf := &oauth2.Config{ClientID: clientID, Endpoint: oauth2.Endpoint{DeviceAuthURL: x.srv.URL + "/oauth/device_authorization",
		TokenURL: x.srv.URL + "/oauth/token", AuthStyle: oauth2.AuthStyleInParams}}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("%s: device authorization: %v", clientID, err)
	}
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	go func() {
		tok, err := conf.DeviceAccessToken(pctx, da)
		done <- result{tok, err}
	}()
	approve(da.UserCode)
	r := <-done
	if r.err != nil {
		t.Fatalf("%s: device access token: %v", clientID, r.err)
	}
	return r.tok.AccessToken
}

var umaChallengeRE = regexp.MustCompile(`UMA realm="edgeid", as_uri="([^"]+)", ticket="([^"]+)"`)

// umaChallenge reads path at the gateway with token (and the client's
// certificate) and returns the UMA challenge's ticket and as_uri of its 401.
func umaChallenge(t *testing.T, g *gw, files demo.Files, token, path string) (ticket, asURI string) {
	t.Helper()
	code, out := g.curl(t, "-i", "-H", "Authorization: Bearer "+token, "--cert", files.DeviceCert, "--key", files.DeviceKey, g.httpURL(path))
	m := umaChallengeRE.FindStringSubmatch(header(out, "WWW-Authenticate"))
	if code != "401" || m == nil {
		t.Fatalf("GET %s: want 401 with a UMA ticket, got %s\n%s", path, code, out)
	}
	return m[2], m[1]
}

// umaToken trades a ticket at the authority's token endpoint (UMA 2.0
// Grant §3.3.1) and checks the answer's status and error; it returns the
// RPT of a 200.
func umaToken(t *testing.T, hc *http.Client, as, clientID, ticket, claim string, wantCode int, wantErr string) string {
	t.Helper()
	resp, err := hc.PostForm(as+"/oauth/token", url.Values{"grant_type": {authority.UMATicketGrant}, "ticket": {ticket}, "client_id": {clientID},
		"claim_token": {claim}, "claim_token_format": {"urn:ietf:params:oauth:token-type:jwt"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ans struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	_ = json.Unmarshal(raw, &ans)
	if resp.StatusCode != wantCode || ans.Error != wantErr || (wantCode == 200 && ans.AccessToken == "") {
		t.Fatalf("%s: UMA grant: %s %s, want %d %q", clientID, resp.Status, raw, wantCode, wantErr)
	}
	return ans.AccessToken
}
