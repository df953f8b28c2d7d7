package edge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Malformed and oversized input is answered or dropped without harm: the
// listener keeps serving, and nothing is published.
func TestCoAPMalformedInput(t *testing.T) {
	g := startCoAPGateway(t)
	addr, err := net.ResolveUDPAddr("udp", g.g.CoAP.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// 1. Garbage datagrams that are not DTLS at all.
	raw, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 1200)
	for i := 0; i < 50; i++ {
		_, _ = rand.Read(junk)
		_, _ = raw.Write(junk[:1+i*20])
	}
	raw.Close()
	// 2. A DTLS session that sends bytes which are not a CoAP message.
	psk := []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(coapKey), nil }),
		piondtls.WithPSKIdentityHint([]byte(coapID)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
	dc, err := piondtls.DialWithOptions("udp", addr, psk...)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{{0xff}, {0x40, 0x03}, bytes.Repeat([]byte{0x5a}, 900), {0x50, 0x02, 0x00, 0x01, 0xff}} {
		_, _ = dc.Write(b)
	}
	_ = dc.Close()

	// 3. An oversized publish over a valid session is refused, not published.
	cc, err := coapdtls.Dial(g.g.CoAP.Addr(), coapdtls.NewDTLSClientOptions(psk...))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	svc.subscribe(t, "devices/+/telemetry/#")
	big := bytes.Repeat([]byte("x"), 300<<10) // beyond mqtt.max_packet_size (256 KiB)
	if resp, err := cc.Put(ctx, "/ps/devices/coap-1/telemetry/big", message.TextPlain, bytes.NewReader(big)); err == nil && resp.Code() == codes.Changed {
		t.Fatalf("an oversized publish was accepted")
	}
	// 4. The listener still serves: a normal publish arrives.
	cc2, err := coapdtls.Dial(g.g.CoAP.Addr(), coapdtls.NewDTLSClientOptions(psk...))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	resp, err := cc2.Put(ctx, "/ps/devices/coap-1/telemetry/temp", message.TextPlain, strings.NewReader("20.5"))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("normal publish after bad input: %v %v", resp, err)
	}
	svc.expectNoMsgBefore(t, "devices/coap-1/telemetry/big", "devices/coap-1/telemetry/temp", "20.5")
}
