package edge_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// oauth posts a form to the authority as a device authenticated with
// private_key_jwt (a fresh client assertion each time).
func (x *authSrv) oauth(key *demo.Issuer, device, path string, form url.Values) map[string]any {
	x.t.Helper()
	now := time.Now()
	a, _ := key.Mint(map[string]any{"iss": device, "sub": device, "aud": x.srv.URL + "/oauth/token", "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}, nil)
	form.Set("client_id", device)
	form.Set("client_assertion_type", authority.ClientAssertionType)
	form.Set("client_assertion", a)
	resp, err := syncclient.HTTPClient(x.fp).PostForm(x.srv.URL+path, form)
	if err != nil {
		x.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return m
}

// The seed's central story in a real browser: an owner registers, logs in,
// enters the code the speaker shows, approves; the speaker's poll returns a
// token bound to its key; it connects to the gateway proving that key; the
// owner unpairs it on "My devices" and the gateway cuts it off.
func TestPinAndPairInBrowser(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	x := startAuthority(t)
	speaker, _ := demo.NewIssuer("speaker-42", "speaker-42-key") // the speaker's own key pair
	pub, _ := speaker.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "speaker-42", Serial: "SPK-000042", Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	g := startGateway(t, func(c *configT) {
		c.Sync.Enrollment = x.enroll("gw-home")
		c.Sync.PresenceInterval = time.Second
	})
	waitFor(t, "the speaker at the gateway", func() bool { _, err := g.g.Store.Device("speaker-42"); return err == nil })

	// The speaker asks for a code (it would show it on its display).
	da := x.oauth(speaker, "speaker-42", "/oauth/device_authorization", url.Values{})
	userCode, _ := da["user_code"].(string)
	complete, _ := da["verification_uri_complete"].(string)
	if userCode == "" || !strings.HasSuffix(complete, userCode) {
		t.Fatalf("device authorization: %v", da)
	}

	ctx := newBrowser(t)
	var text string
	shot := filepath.Join(t.TempDir(), "page.png")
	_ = shot
	err := chromedp.Do(ctx,
		chromedp.Navigate(x.srv.URL+"/register"),
		chromedp.SendKeys("#username", "alice"),
		chromedp.SendKeys("#email", "alice@example.com"),
		chromedp.SendKeys("#password", "correct horse battery"),
		chromedp.Click("#register"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys("#password", "correct horse battery"),
		chromedp.Click("#login"),
		chromedp.WaitVisible("#none"), // "My devices", empty
		chromedp.Navigate(complete),   // the QR code's URL
		chromedp.WaitVisible("#approve"),
	)
	if err == nil {
		text, err = chromedp.Run(ctx, chromedp.Text("#device-id"))
	}
	if err != nil {
		t.Fatalf("browser, up to consent: %v", err)
	}
	if text != "speaker-42" {
		t.Fatalf("consent page shows device %q", text)
	}
	if err := chromedp.Do(ctx, chromedp.Click("#approve"), chromedp.WaitVisible("#dev-speaker-42")); err != nil {
		t.Fatalf("browser, approve: %v", err)
	}

	// The speaker's poll now returns its token, bound to its key.
	var tok string
	waitFor(t, "the token", func() bool {
		m := x.oauth(speaker, "speaker-42", "/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {da["device_code"].(string)}})
		tok, _ = m["access_token"].(string)
		return tok != ""
	})
	waitFor(t, "the pairing at the gateway", func() bool { d, _ := g.g.Store.Device("speaker-42"); return d.Owner == "alice" })
	thumb, _ := pub.Thumbprint(crypto.SHA256)
	if c := decodePayload(t, tok); c["sub"] != "alice" || c["cnf"].(map[string]any)["jkt"] != base64.RawURLEncoding.EncodeToString(thumb) {
		t.Fatalf("paired token: %v", c)
	}
	disc := make(chan byte, 1)
	conn := g.dial(connOpts{})
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: &prover{key: speaker.Key, clientID: "speaker-42"}, OnClientError: func(error) {},
		OnServerDisconnect: func(d *paho.Disconnect) { disc <- d.ReasonCode }})
	ca, err := c.Connect(g.ctx(), &paho.Connect{ClientID: "speaker-42", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("speaker connect with its paired token: %v", err)
	}
	if pr, err := c.Publish(g.ctx(), &paho.Publish{Topic: "owners/alice/alerts", Payload: []byte("hello"), QoS: 1}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish on the owner's topic: %+v %v", pr, err)
	}

	// "My devices" shows the speaker online, as its gateway reports it.
	waitFor(t, "the speaker shown online", func() bool {
		if err := chromedp.Do(ctx, chromedp.Navigate(x.srv.URL+"/devices"), chromedp.WaitVisible("#dev-speaker-42")); err != nil {
			return false
		}
		seen, err := chromedp.Run(ctx, chromedp.Text("#dev-speaker-42 .seen"))
		return err == nil && strings.Contains(seen, "online now (gw-home)")
	})

	// Unpair in the browser: the gateway disconnects the speaker.
	if err := chromedp.Do(ctx, chromedp.Click("#confirm-unpair-speaker-42"), chromedp.Click("#unpair-speaker-42"), chromedp.WaitNotPresent("#dev-speaker-42"), chromedp.WaitVisible("#notice")); err != nil {
		t.Fatalf("browser, unpair: %v", err)
	}
	if text, err = chromedp.Run(ctx, chromedp.Text("#notice")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "Unpaired speaker-42") {
		t.Fatalf("notice %q", text)
	}
	select {
	case code := <-disc:
		if code != 0x87 {
			t.Fatalf("DISCONNECT %s, want 0x87", hexCode(code))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not disconnect the unpaired speaker")
	}
	// Its token is refused afterwards; the next owner can pair it again.
	if code := g.connectWithProof("speaker-42", tok, &prover{key: speaker.Key, clientID: "speaker-42"}); code != 0x87 {
		t.Fatalf("the unpaired speaker's token: CONNACK %s, want 0x87", hexCode(code))
	}
	da2 := x.oauth(speaker, "speaker-42", "/oauth/device_authorization", url.Values{})
	if err := x.a.DecidePairing(da2["user_code"].(string), "bob", true); err != nil {
		t.Fatalf("next owner pairing: %v", err)
	}
}

func decodePayload(t *testing.T, tok string) map[string]any {
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}
