package edge_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgeid/edgeid/edge/coap"
)

// onlyMarker reads what svc receives until the marker and fails on
// anything else: nothing before it was published.
func onlyMarker(t *testing.T, svc *client, markerTopic, marker string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m := <-svc.msgs:
			if m.Topic == markerTopic && string(m.Payload) == marker {
				return
			}
			t.Errorf("published %q on %s", m.Payload, m.Topic)
		case <-timeout:
			t.Fatalf("marker %q never arrived", marker)
		}
	}
}

// Options RFC 7252 §5.4 says must fail a request: a confirmable one is
// answered 4.02, a non-confirmable one is ignored, and neither publishes.
func TestCoAPBadOptionsPublishNothing(t *testing.T) {
	g := startCoAPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	svc.subscribe(t, "devices/+/telemetry/#")
	addr, err := net.ResolveUDPAddr("udp", g.g.CoAP.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := piondtls.DialWithOptions("udp", addr,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(coapKey), nil }),
		piondtls.WithPSKIdentityHint([]byte(coapID)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	const temp = "/ps/devices/coap-1/telemetry/temp"
	var mid uint16 = 0x2000
	send := func(typ message.Type, body string, opts ...message.Option) {
		t.Helper()
		mid++
		if _, err := dc.Write(rawEncode(t, typ, codes.PUT, mid, "s", []byte(body), opts...)); err != nil {
			t.Fatal(err)
		}
	}
	// answer is the code of the reply to the last request (Empty if none
	// came within wait: a bound, used only where none is expected).
	answer := func(wait time.Duration) codes.Code {
		t.Helper()
		buf := make([]byte, 2048)
		for {
			_ = dc.SetReadDeadline(time.Now().Add(wait))
			n, err := dc.Read(buf)
			if err != nil {
				return codes.Empty
			}
			m := message.Message{Options: make(message.Options, 0, 16)}
			if _, err := rawDecode(buf[:n], &m); err == nil && uint16(m.MessageID) == mid {
				return m.Code
			}
		}
	}
	block1 := rawOpt(message.Block1, "\x00\x00\x00\x08") // 4 bytes: Block1 is 0-3
	long := "/ps/devices/coap-1/telemetry/" + strings.Repeat("x", 300)
	for _, c := range []struct {
		name string
		opts []message.Option
	}{
		{"a 4-byte Block1", append(rawPath(temp), block1)},
		{"a 300-byte Uri-Path segment", rawPath(long)},
		{"an unknown critical option", append(rawPath(temp), rawOpt(65003, "x"))},
		{"Block1 twice", append(rawPath(temp), rawOpt(message.Block1, "\x08"), rawOpt(message.Block1, "\x18"))},
		{"a non-empty If-None-Match", append(rawPath(temp), rawOpt(message.IfNoneMatch, "x"))},
	} {
		send(message.Confirmable, "con: "+c.name, c.opts...)
		if code := answer(10 * time.Second); code != codes.BadOption {
			t.Errorf("CON with %s: answered %v, want 4.02", c.name, code)
		}
		send(message.NonConfirmable, "non: "+c.name, c.opts...)
	}
	// An elective option of bad length is ignored: the request is served.
	send(message.Confirmable, "ok", append(rawPath("/ps/devices/coap-1/telemetry/marker"), rawOpt(message.ContentFormat, "\x00\x00\x00"))...)
	if code := answer(10 * time.Second); code != codes.Changed {
		t.Fatalf("marker with an elective option of bad length: %v, want 2.04", code)
	}
	onlyMarker(t, svc, "devices/coap-1/telemetry/marker", "ok")
}

// A proof's JWS header must be what the gateway checks: the algorithm of
// the device key, and no crit (no extension is understood).
func TestCoAPUDPProofHeader(t *testing.T) {
	g, d := startUDPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	svc.subscribe(t, "devices/+/telemetry/#")
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info: %q", out)
	}
	const temp = "/ps/devices/udp-1/telemetry/temp"
	put := func(body, proof string) codes.Code {
		t.Helper()
		cc, err := udp.Dial(g.g.CoAP.UDPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Put(ctx, temp, message.TextPlain, strings.NewReader(body), message.Option{ID: coap.OptionProof, Value: []byte(proof)})
		if err != nil {
			t.Fatalf("put %q: %v", body, err)
		}
		return resp.Code()
	}
	typ := coap.UDPProofType
	for _, c := range []struct {
		body   string
		header map[string]any
		want   codes.Code
	}{
		{"es384", map[string]any{"alg": "ES384", "typ": typ}, codes.Unauthorized},
		{"crit", map[string]any{"alg": "ES256", "typ": typ, "crit": []string{"exp"}, "exp": 1}, codes.Unauthorized},
		{"b64", map[string]any{"alg": "ES256", "typ": typ, "crit": []string{"b64"}, "b64": true}, codes.Unauthorized},
		{"plain", map[string]any{"alg": "ES256", "typ": typ}, codes.Changed}, // the same signing, as the gateway wants it
	} {
		if code := put(c.body, craftProof(t, d.key, c.header, temp, d.token, c.body)); code != c.want {
			t.Errorf("proof with header %v: %v, want %v", c.header, code, c.want)
		}
	}
	onlyMarker(t, svc, "devices/udp-1/telemetry/temp", "plain")
}

// craftProof signs a proof of a PUT of body to path with an ES256 key under
// any header: what coap.Prove would never make.
func craftProof(t *testing.T, key jwk.Key, header map[string]any, path, token, body string) string {
	t.Helper()
	var priv ecdsa.PrivateKey
	if err := jwk.Export(key, &priv); err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return b64(h[:]) }
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	cf := uint32(message.TextPlain)
	hb, _ := json.Marshal(header)
	pb, _ := json.Marshal(coap.Proof{Method: "PUT", URI: path, ATH: sum(token), PH: sum(body), IAT: time.Now().Unix(), JTI: b64(id), ContentFormat: &cf})
	in := b64(hb) + "." + b64(pb)
	h := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, &priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64(sig)
}

// A token of a few KB posted over DTLS is taken, in one message or
// block-wise; one over the limit is answered 4.13. None ends the session.
func TestCoAPLargeTokenPost(t *testing.T) {
	g := startCoAPGateway(t)
	tok := g.token(coapDevice, "alice", func(c map[string]any) { c["pad"] = strings.Repeat("p", 2500) })
	if len(tok) < 1500 || len(tok) > 4000 {
		t.Fatalf("a %d-byte token; the test wants 1500 to 4000", len(tok))
	}
	psk := []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(coapKey), nil }),
		piondtls.WithPSKIdentityHint([]byte(coapID)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
	post := func(blockwise bool, body string) (codes.Code, error) {
		t.Helper()
		var opts []udp.Option
		if !blockwise {
			opts = append(opts, options.WithBlockwise(false, 0, time.Second))
		}
		cc, err := coapdtls.Dial(g.g.CoAP.Addr(), coapdtls.NewDTLSClientOptions(psk...), opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := cc.Post(ctx, "/authz-info", message.TextPlain, strings.NewReader(body))
		if err != nil {
			return codes.Empty, err
		}
		return resp.Code(), nil
	}
	if code, err := post(false, tok); err != nil || code != codes.Created {
		t.Errorf("a %d-byte token in one message: %v %v, want 2.01", len(tok), code, err)
	}
	if code, err := post(true, tok); err != nil || code != codes.Created {
		t.Errorf("a %d-byte token block-wise: %v %v, want 2.01", len(tok), code, err)
	}
	if code, err := post(true, strings.Repeat("t", 9000)); err != nil || code != codes.RequestEntityTooLarge {
		t.Errorf("9,000 bytes block-wise: %v %v, want 4.13", code, err)
	}
}
