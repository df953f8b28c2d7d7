package edge_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// A CoAP device pairs through its gateway, only while the gateway's pairing
// window is open (the pair button, or edgeid pair).
func TestPairingRelayOverCoAP(t *testing.T) {
	x := startAuthority(t)
	key, _ := demo.NewIssuer("coap-1", "coap-1-key")
	pub, _ := key.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Devices: []store.Device{{ID: coapDevice, Class: "thermostat",
		Status: store.DeviceActive, PSKIdentity: coapID, PSK: []byte(coapKey), PublicKey: pubJSON}}})
	g := startGateway(t, func(c *configT) {
		c.Sync.Enrollment = x.enroll("gw-c")
		c.CoAP.DTLSListen = "127.0.0.1:0"
	})
	waitFor(t, "the device at the gateway", func() bool { _, err := g.g.Store.Device(coapDevice); return err == nil })
	uri := "coaps://" + g.g.CoAP.Addr() + "/pair"

	if out := g.coap(t, coapID, coapKey, "-m", "post", "-e", `{"op":"start"}`, uri); !strings.Contains(out, "4.03") {
		t.Fatalf("pairing with the window closed: %q, want 4.03", out)
	}
	g.g.OpenPairing(time.Minute)
	out := g.coap(t, coapID, coapKey, "-m", "post", "-e", `{"op":"start"}`, uri)
	var start map[string]any
	if i := strings.Index(out, "{"); i < 0 || json.Unmarshal([]byte(out[i:]), &start) != nil || start["user_code"] == nil {
		t.Fatalf("pairing start: %q", out)
	}
	out = g.coap(t, coapID, coapKey, "-m", "post", "-e", `{"op":"poll","device_code":"`+start["device_code"].(string)+`"}`, uri)
	if !strings.Contains(out, "authorization_pending") {
		t.Fatalf("poll before approval: %q", out)
	}
	if err := x.a.DecidePairing(start["user_code"].(string), "alice", true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // the RFC 8628 polling interval
	out = g.coap(t, coapID, coapKey, "-m", "post", "-e", `{"op":"poll","device_code":"`+start["device_code"].(string)+`"}`, uri)
	if !strings.Contains(out, "access_token") {
		t.Fatalf("poll after approval: %q", out)
	}
}

// RFC 9200 /authz-info over the DTLS-PSK session: a posted token narrows the
// session to the class ∩ its scope; a bad token gets 4.01 with a hint; a
// token of another device is refused; revoking the token ends the session.
func TestCoAPAuthzInfo(t *testing.T) {
	g := startCoAPGateway(t)
	authz := "coaps://" + g.g.CoAP.Addr() + "/authz-info"
	put := func(topic string) string {
		return g.coap(t, coapID, coapKey, "-m", "put", "-e", "1", g.coapURI(topic))
	}
	if out := put("devices/coap-1/telemetry/humidity"); strings.Contains(out, "4.") {
		t.Fatalf("class alone allows telemetry/#: %q", out)
	}
	if out := g.coap(t, coapID, coapKey, "-m", "post", "-e", "garbage", authz); !strings.Contains(out, "4.01") {
		t.Fatalf("bad token: %q, want 4.01", out)
	}
	other := g.token("thermo-1", "alice", nil)
	if out := g.coap(t, coapID, coapKey, "-m", "post", "-e", other, authz); !strings.Contains(out, "4.01") {
		t.Fatalf("another device's token: %q, want 4.01", out)
	}
	// RFC 9202: a token bound to the session's PSK (cnf kid = its identity)
	// is taken; one bound to another PSK is not.
	for _, c := range []struct{ kid, want string }{{coapID, ""}, {"someone-else", "4.01"}} {
		tok := g.token(coapDevice, "alice", func(m map[string]any) { m["cnf"] = map[string]any{"kid": c.kid} })
		bound := strings.Count(g.logs.String(), "coap token bound to session")
		out := g.coap(t, coapID, coapKey, "-m", "post", "-e", tok, authz)
		after := strings.Count(g.logs.String(), "coap token bound to session")
		if c.want == "" && (strings.Contains(out, "4.") || after != bound+1) {
			t.Fatalf("token bound to this PSK (kid %q) refused: %q", c.kid, out)
		}
		if c.want != "" && (!strings.Contains(out, c.want) || after != bound) {
			t.Fatalf("token bound to another PSK (kid %q): %q, want %s", c.kid, out, c.want)
		}
	}
	// A kid-bound token cannot be used over MQTT: there is no PSK to prove.
	if code, _ := g.connect(connOpts{clientID: coapDevice, token: g.token(coapDevice, "alice", func(m map[string]any) {
		m["cnf"] = map[string]any{"kid": coapID}
	})}); code != 0x87 {
		t.Fatalf("kid-bound token over MQTT: CONNACK %s, want 0x87", hexCode(code))
	}
	narrow := g.token(coapDevice, "alice", func(c map[string]any) {
		c["scope"] = "publish:devices/coap-1/telemetry/temp"
		c["jti"] = "coap-token-1"
	})
	// Within one DTLS session: post the token, then publish.
	cc, err := coapdtls.Dial(g.g.CoAP.Addr(), coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(coapKey), nil }),
		piondtls.WithPSKIdentityHint([]byte(coapID)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code := func(path string, body string) codes.Code {
		var resp *pool.Message
		var err error
		if path == "/authz-info" {
			resp, err = cc.Post(ctx, path, message.TextPlain, strings.NewReader(body))
		} else {
			resp, err = cc.Put(ctx, path, message.TextPlain, strings.NewReader(body))
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.Code()
	}
	if c := code("/ps/devices/coap-1/telemetry/humidity", "1"); c != codes.Changed {
		t.Fatalf("before the token: %v", c)
	}
	if c := code("/authz-info", narrow); c != codes.Created {
		t.Fatalf("authz-info: %v, want 2.01", c)
	}
	if c := code("/ps/devices/coap-1/telemetry/temp", "1"); c != codes.Changed {
		t.Fatalf("allowed by class and token: %v", c)
	}
	if c := code("/ps/devices/coap-1/telemetry/humidity", "1"); c != codes.Forbidden {
		t.Fatalf("allowed by the class only, after the token: %v, want 4.03", c)
	}
	// Revoking the token ends the session.
	if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "coap-token-1",
		RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session ended", func() bool { return g.g.CoAP.Sessions(coapDevice) == 0 })
	if !strings.Contains(g.logs.String(), "coap token bound to session") {
		t.Fatal("token not bound")
	}
	if !strings.Contains(g.logs.String(), "coap token refused") {
		t.Fatal("refusals not logged")
	}
}
