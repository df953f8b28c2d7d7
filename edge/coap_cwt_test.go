package edge_test

import (
	"crypto/ecdsa"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/demo"
)

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
		authz := "coaps://" + g.g.CoAP.Addr() + "/authz-info"
		bound := func() int { return strings.Count(g.logs.String(), "coap token bound to session") }
		mine := g.cwt(t, coapDevice, "alice", func(c map[string]any) { c["cnf"] = map[string]any{"kid": coapID} })
		wrapped, _ := cbor.Marshal(mine)
		for name, body := range map[string][]byte{"bare CWT": mine, "CWT in a CBOR byte string": wrapped} {
			before := bound()
			out := g.coap(t, coapID, coapKey, "-m", "post", "-t", "61", "-f", writeFile(t, body), authz)
			if strings.Contains(out, "4.") || bound() != before+1 {
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
		svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
		if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
			t.Fatalf("subscribe: %s", hexCode(rc[0]))
		}
		tok := g.cwt(t, "udp-1", "alice", nil, demo.WithClaim(8, map[int]any{1: coseKey(t, d.key)}))
		jwt := g.token("udp-1", "alice", func(c map[string]any) { c["cnf"] = map[string]any{"jkt": jktOf(t, d.key)} })
		t.Logf("the same token: CWT %d bytes, JWT %d", len(tok), len(jwt))
		const temp = "/ps/devices/udp-1/telemetry/temp"
		proof := d.proof(t, d.key, codes.PUT, temp, string(tok), "cwt-inline", time.Now())
		out := d.request(t, "put", temp, "cwt-inline", "", proof, "-O", strconv.Itoa(int(coap.OptionAccessToken))+",0x"+hex.EncodeToString(tok))
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
