package edge_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgeid/edgeid/edge/coap"
)

// Plain UDP does not verify the source address: an answer to a request
// that proved nothing must be no larger than the request, or a forged
// source makes the gateway an amplifier. A request large enough (a device's
// with its proof) still gets the diagnostic.
func TestCoAPUDPNoAmplification(t *testing.T) {
	g, _ := startUDPGateway(t)
	r, err := newRawUDP(t, g, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const temp = "/ps/devices/udp-1/telemetry/temp"
	for _, c := range []struct {
		name  string
		dgram []byte
	}{
		{"4-byte GET", []byte{0x40, byte(codes.GET), 0x12, 0x34}},
		{"4-byte NON GET", []byte{0x50, byte(codes.GET), 0x12, 0x35}},
		{"4-byte POST", []byte{0x40, byte(codes.POST), 0x12, 0x36}},
		{"GET of a topic, no proof", rawEncode(t, message.Confirmable, codes.GET, 0x1237, "t1", nil, rawPath(temp)...)},
		{"PUT of a topic, no proof", rawEncode(t, message.Confirmable, codes.PUT, 0x1238, "t2", []byte("1"), rawPath(temp)...)},
		{"garbage token at /authz-info", rawEncode(t, message.Confirmable, codes.POST, 0x1239, "", []byte("x"), rawPath("/authz-info")...)},
		{"GET at /authz-info", rawEncode(t, message.Confirmable, codes.GET, 0x123a, "", nil, rawPath("/authz-info")...)},
		{"short garbage proof", rawEncode(t, message.Confirmable, codes.GET, 0x123b, "", nil, append(rawPath(temp), rawOpt(coap.OptionProof, "a.b.c"))...)},
	} {
		r.send(c.dgram)
		m, n, err := r.await(10*time.Second, func(m message.Message) bool { return m.Code != codes.Empty })
		if err != nil {
			t.Errorf("%s: no answer: %v", c.name, err)
			continue
		}
		if n > len(c.dgram) {
			t.Errorf("%s: %d-byte request answered %v in %d bytes (x%.1f): %q", c.name, len(c.dgram), m.Code, n, float64(n)/float64(len(c.dgram)), m.Payload)
		}
		if m.Code < codes.BadRequest {
			t.Errorf("%s: answered %v", c.name, m.Code)
		}
	}
	// A request as large as the hint (a device's, with its proof) gets it.
	big := rawEncode(t, message.Confirmable, codes.GET, 0x1300, "t3", nil, append(rawPath(temp), rawOpt(coap.OptionProof, strings.Repeat("x", 300)))...)
	r.send(big)
	m, n, err := r.await(10*time.Second, answerTo(0x1300, "t3"))
	if err != nil || m.Code != codes.Unauthorized || !bytes.Contains(m.Payload, []byte(`"error"`)) || n > len(big) {
		t.Fatalf("a %d-byte unproven request: %v in %d bytes, %q, %v; want 4.01 with the hint", len(big), m.Code, n, m.Payload, err)
	}
}
