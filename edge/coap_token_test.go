package edge_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Access tokens for CoAP sessions (RFC 9200, RFC 9202): posted to
// /authz-info over DTLS, as JWTs or CWTs, bound to the session's PSK or to
// a device key, small or large.

// RFC 9200 /authz-info over the DTLS-PSK session: a posted token narrows the
// session to the class ∩ its scope; a bad token gets 4.01 with a hint; a
// token of another device is refused; revoking the token ends the session.
func TestCoAPAuthzInfo(t *testing.T) {
	g := startCoAPGateway(t)
	authz := g.authzURI()
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
		bound := g.tokensBound()
		out := g.coap(t, coapID, coapKey, "-m", "post", "-e", tok, authz)
		after := g.tokensBound()
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
	cc := g.dialPSK(t)
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

// CWT access tokens (RFC 8392) at /authz-info, over DTLS and plain UDP,
// posted with coap-client: bare (Content-Format 61, application/cwt) or as a
// CBOR byte string (RFC 9200), and small enough to ride in the request
// beside its proof.

// cwt mints a CWT for device from the gateway's test issuer; mod edits the
// claims (JWT names), opts the CWT itself.
func (g *gw) cwt(t *testing.T, device, sub string, mod func(map[string]any), opts ...demo.CWTOption) []byte {
	t.Helper()
	var scope string
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			scope = demo.Scope(c, device, "alice")
		}
	}
	claims := g.iss.Claims(device, sub, "edgeid", scope, time.Hour)
	if mod != nil {
		mod(claims)
	}
	tok, err := g.iss.MintCWT(claims, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// coseKey is the COSE_Key (RFC 9052 §7) of a P-256 public key.
func coseKey(t *testing.T, priv jwk.Key) map[int]any {
	t.Helper()
	pub, _ := priv.PublicKey()
	var k ecdsa.PublicKey
	if err := jwk.Export(pub, &k); err != nil {
		t.Fatal(err)
	}
	raw, err := k.Bytes() // 0x04 || x || y
	if err != nil || len(raw) != 65 {
		t.Fatalf("P-256 public key: %v", err)
	}
	return map[int]any{1: 2, -1: 1, -2: raw[1:33], -3: raw[33:]}
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestCoAPCWT(t *testing.T) {
	t.Run("over DTLS, bound to the session's PSK", func(t *testing.T) {
		g := startCoAPGateway(t)
		authz := g.authzURI()
		mine := g.cwt(t, coapDevice, "alice", func(c map[string]any) { c["cnf"] = map[string]any{"kid": coapID} })
		wrapped, _ := cbor.Marshal(mine)
		for name, body := range map[string][]byte{"bare CWT": mine, "CWT in a CBOR byte string": wrapped} {
			before := g.tokensBound()
			out := g.coap(t, coapID, coapKey, "-m", "post", "-t", "61", "-f", writeFile(t, body), authz)
			if strings.Contains(out, "4.") || g.tokensBound() != before+1 {
				t.Errorf("%s refused: %q", name, out)
			}
		}
		// A CWT for another PSK, and one signed by a stranger, are refused.
		other := g.cwt(t, coapDevice, "alice", func(c map[string]any) { c["cnf"] = map[string]any{"kid": "someone-else"} })
		stranger, _ := demo.NewIssuer("https://issuer.test", "k1") // same iss and kid, another key
		forged, err := stranger.MintCWT(stranger.Claims(coapDevice, "alice", "edgeid", "", time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for name, body := range map[string][]byte{"bound to another PSK": other, "forged": forged} {
			if out := g.coap(t, coapID, coapKey, "-m", "post", "-t", "61", "-f", writeFile(t, body), authz); !strings.Contains(out, "4.01") {
				t.Errorf("%s: want 4.01, got %q", name, out)
			}
		}
	})

	t.Run("over plain UDP, bound to the device key, in the request beside its proof", func(t *testing.T) {
		g, d := startUDPGateway(t)
		svc := g.telemetry(t)
		tok := g.cwt(t, "udp-1", "alice", nil, demo.WithClaim(8, map[int]any{1: coseKey(t, d.key)}))
		jwt := d.boundToken(nil)
		t.Logf("the same token: CWT %d bytes, JWT %d", len(tok), len(jwt))
		const temp = udpTemp
		proof := d.proof(t, d.key, codes.PUT, temp, string(tok), "cwt-inline", time.Now())
		out := d.request(t, "put", temp, "cwt-inline", "", proof, tokenOpt("0x"+hex.EncodeToString(tok))...)
		if strings.Contains(out, "4.") {
			t.Fatalf("a CWT in option %d beside its proof, one datagram: %q", coap.OptionAccessToken, out)
		}
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "cwt-inline")
		// Posted first, then named by its digest.
		if out := d.request(t, "post", "/authz-info", "", "", "", "-t", "61", "-f", writeFile(t, tok)); strings.Contains(out, "4.") {
			t.Fatalf("authz-info refused the CWT: %q", out)
		}
		proof = d.proof(t, d.key, codes.PUT, temp, string(tok), "cwt-posted", time.Now())
		if out := d.request(t, "put", temp, "cwt-posted", "", proof); strings.Contains(out, "4.") {
			t.Fatalf("publish naming the posted CWT: %q", out)
		}
		svc.expectMsg(t, "devices/udp-1/telemetry/temp", "cwt-posted")
	})
}
