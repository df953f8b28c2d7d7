package edge_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/edgeid/edgeid/edge/coap"
)

// Hostile input on the CoAP listeners: junk, malformed and oversized
// messages, options RFC 7252 says must fail a request, datagrams with forged
// source addresses. None of it publishes, makes a session or stops the
// listener serving.

// rawUDP is a CoAP endpoint on a plain UDP socket, for what a CoAP library
// will not send: exact datagrams, junk from a device's own address and port,
// options of invalid length.
type rawUDP struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	mid  atomic.Uint32
}

// newRawUDP opens a socket on laddr ("127.0.0.1:0" for any port) towards
// the gateway's plain-UDP listener.
func newRawUDP(t *testing.T, g *gw, laddr string) (*rawUDP, error) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", g.g.CoAP.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	la, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	r := &rawUDP{t: t, conn: c, to: to}
	r.mid.Store(0x1000)
	t.Cleanup(func() { _ = c.Close() })
	return r, nil
}

// rawOpt is one option; request sorts them.
func rawOpt(id message.OptionID, v string) message.Option {
	return message.Option{ID: id, Value: []byte(v)}
}

// rawPath is the Uri-Path options of path.
func rawPath(path string) []message.Option {
	var out []message.Option
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		out = append(out, rawOpt(message.URIPath, seg))
	}
	return out
}

// rawEncode is the datagram of a message, its options in order.
func rawEncode(t *testing.T, typ message.Type, code codes.Code, mid uint16, token string, payload []byte, opts ...message.Option) []byte {
	t.Helper()
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	m := message.Message{Type: typ, Code: code, MessageID: int32(mid), Options: opts, Payload: payload}
	if token != "" {
		m.Token = []byte(token)
	}
	buf := make([]byte, 64*1024)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf[:n]
}

// send writes a datagram as it is.
func (r *rawUDP) send(b []byte) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDP(b, r.to); err != nil {
		r.t.Fatal(err)
	}
}

// request sends a request (CON unless typ says otherwise) and returns its
// message id.
func (r *rawUDP) request(typ message.Type, code codes.Code, token string, payload []byte, opts ...message.Option) uint16 {
	r.t.Helper()
	mid := uint16(r.mid.Add(1))
	r.send(rawEncode(r.t, typ, code, mid, token, payload, opts...))
	return mid
}

// next is the next datagram from the gateway, decoded, with its size; an
// error when none comes within wait (a bound, not an expectation).
func (r *rawUDP) next(wait time.Duration) (message.Message, int, error) {
	buf := make([]byte, 64*1024)
	_ = r.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := r.conn.ReadFromUDP(buf)
	if err != nil {
		return message.Message{}, 0, err
	}
	m := message.Message{Options: make(message.Options, 0, 32)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		return message.Message{}, n, err
	}
	return m, n, nil
}

// await reads until a datagram for which match is true, acknowledging
// confirmable ones (notifications); an error if none comes within wait.
func (r *rawUDP) await(wait time.Duration, match func(message.Message) bool) (message.Message, int, error) {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return message.Message{}, 0, errors.New("no matching datagram")
		}
		m, n, err := r.next(left)
		if err != nil {
			return m, n, err
		}
		if m.Type == message.Confirmable {
			r.send(rawEncode(r.t, message.Acknowledgement, codes.Empty, uint16(m.MessageID), "", nil))
		}
		if match(m) {
			return m, n, nil
		}
	}
}

// answerTo matches the response to the request with message id mid (a
// piggybacked ACK) or token (a separate or NON response).
func answerTo(mid uint16, token string) func(message.Message) bool {
	return func(m message.Message) bool {
		if m.Code == codes.Empty {
			return false
		}
		return (m.Type == message.Acknowledgement && uint16(m.MessageID) == mid) || (token != "" && string(m.Token) == token)
	}
}

// rawDecode decodes a datagram (m needs room for its options).
func rawDecode(b []byte, m *message.Message) (int, error) { return coder.DefaultCoder.Decode(b, m) }

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

// Anyone on the path can send a datagram with a device's address and port
// as its source. One that is not CoAP at all (1 to 13 bytes of junk) must
// not end the device's proven plain-UDP session: its observation goes on
// and the next command reaches it.
func TestCoAPUDPJunkFromDeviceAddress(t *testing.T) {
	g, d := startUDPGateway(t)
	svc := g.service()
	dev, err := newRawUDP(t, g, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const cmd, temp = udpCmd, udpTemp
	mid := dev.request(message.Confirmable, codes.POST, "tk", []byte(d.token), rawPath("/authz-info")...)
	if m, _, err := dev.await(10*time.Second, answerTo(mid, "tk")); err != nil || m.Code != codes.Created {
		t.Fatalf("authz-info: %v %v", m.Code, err)
	}
	proof := d.proof(t, d.key, codes.GET, cmd, d.token, "", time.Now(), observing)
	mid = dev.request(message.Confirmable, codes.GET, "obs1", nil, append(rawPath(cmd), rawOpt(message.Observe, ""), rawOpt(coap.OptionProof, proof))...)
	if m, _, err := dev.await(10*time.Second, answerTo(mid, "obs1")); err != nil || m.Code != codes.Content {
		t.Fatalf("observe: %v %v", m.Code, err)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations, want 1", n)
	}
	put := func(body string) {
		t.Helper()
		tok := "p" + body[:3]
		proof := d.proof(t, d.key, codes.PUT, temp, d.token, body, time.Now())
		mid := dev.request(message.Confirmable, codes.PUT, tok, []byte(body), append(rawPath(temp), rawOpt(coap.OptionProof, proof))...)
		if m, _, err := dev.await(10*time.Second, answerTo(mid, tok)); err != nil || m.Code != codes.Changed {
			t.Fatalf("proven PUT %q: %v %v", body, m.Code, err)
		}
	}
	put("before")
	for n := 1; n <= 13; n++ {
		dev.send([]byte(strings.Repeat("\xff", n))) // version 3: not CoAP
	}
	// The listener reads datagrams in order: once this is answered, the
	// junk has been read.
	put("after")
	if n := g.g.CoAP.Sessions("udp-1"); n != 1 {
		t.Errorf("%d sessions of udp-1 after the junk, want the 1 it had", n)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations after the junk, want the 1 it had", n)
	}
	if rc := svc.publish(t, "devices/udp-1/commands/set", "after-junk", 1); rc >= 0x80 {
		t.Fatalf("publish: %s", hexCode(rc))
	}
	m, _, err := dev.await(10*time.Second, func(m message.Message) bool { return string(m.Token) == "obs1" })
	if err != nil || m.Code != codes.Content || string(m.Payload) != "after-junk" {
		t.Fatalf("notification after the junk: %v %q %v", m.Code, m.Payload, err)
	}
	// Junk again and a command straight after, with no request between
	// them: the notification still arrives.
	dev.send([]byte{0x40})
	svc.publish(t, "devices/udp-1/commands/set", "right-after", 1)
	m, _, err = dev.await(10*time.Second, func(m message.Message) bool { return string(m.Token) == "obs1" && string(m.Payload) == "right-after" })
	if err != nil || m.Code != codes.Content {
		t.Fatalf("notification right after junk: %v %v", m.Code, err)
	}
}

// sprayJunk sends n datagrams of random bytes to addr from one socket,
// 1, 1+step, 1+2*step ... bytes long.
func sprayJunk(t *testing.T, addr string, n, step int) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	junk := make([]byte, 1+(n-1)*step)
	for i := range n {
		_, _ = rand.Read(junk)
		_, _ = raw.Write(junk[:1+i*step])
	}
}

// dialRawDTLS opens a DTLS session as coap-1 that carries whatever bytes
// the test writes.
func (g *gw) dialRawDTLS(t *testing.T) *piondtls.Conn {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", g.g.CoAP.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := piondtls.DialWithOptions("udp", addr, pskOptions(coapID, coapKey)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.Close() })
	return dc
}

// Malformed and oversized input is answered or dropped without harm: the
// listener keeps serving, and nothing is published.
func TestCoAPMalformedInput(t *testing.T) {
	g := startCoAPGateway(t)
	// 1. Garbage datagrams that are not DTLS at all.
	sprayJunk(t, g.g.CoAP.Addr(), 50, 20)
	// 2. A DTLS session that sends bytes which are not a CoAP message.
	dc := g.dialRawDTLS(t)
	for _, b := range [][]byte{{0xff}, {0x40, 0x03}, bytes.Repeat([]byte{0x5a}, 900), {0x50, 0x02, 0x00, 0x01, 0xff}} {
		_, _ = dc.Write(b)
	}
	_ = dc.Close()

	// 3. An oversized publish over a valid session is refused, not published.
	cc := g.dialPSK(t)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svc := g.telemetry(t)
	big := bytes.Repeat([]byte("x"), 300<<10) // beyond mqtt.max_packet_size (256 KiB)
	if resp, err := cc.Put(ctx, "/ps/devices/coap-1/telemetry/big", message.TextPlain, bytes.NewReader(big)); err == nil && resp.Code() == codes.Changed {
		t.Fatalf("an oversized publish was accepted")
	}
	// 4. The listener still serves: a normal publish arrives.
	cc2 := g.dialPSK(t)
	defer cc2.Close()
	resp, err := cc2.Put(ctx, "/ps/devices/coap-1/telemetry/temp", message.TextPlain, strings.NewReader("20.5"))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("normal publish after bad input: %v %v", resp, err)
	}
	svc.expectNoMsgBefore(t, "devices/coap-1/telemetry/big", "devices/coap-1/telemetry/temp", "20.5")
}

// Garbage and malformed requests on the plain-UDP listener are answered or
// dropped, make no session, and the listener keeps serving.
func TestCoAPUDPMalformedInput(t *testing.T) {
	g, d := startUDPGateway(t)
	sprayJunk(t, g.g.CoAP.UDPAddr(), 40, 1500)
	for name, opts := range map[string][]string{
		"a 1 KB proof of garbage":         proofOpt(strings.Repeat("x", 1000)),
		"a JWS with a garbage payload":    proofOpt("eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln"),
		"a token option of binary junk":   append(tokenOpt("0xd28443a10126a0f6"), proofOpt("a.b.c")...),
		"a CBOR byte string that is junk": tokenOpt("0x58ff00"),
	} {
		if out := d.request(t, "put", udpTemp, "x", "", "", opts...); !strings.Contains(out, "4.01") {
			t.Errorf("%s: want 4.01, got %q", name, out)
		}
	}
	if out := d.request(t, "post", "/authz-info", "", "", "", "-t", "61", "-f", writeFile(t, []byte{0x58, 0xff, 0x01})); !strings.Contains(out, "4.01") {
		t.Errorf("a truncated CBOR token at /authz-info: %q", out)
	}
	if n := g.g.CoAP.Sessions(""); n != 0 {
		t.Fatalf("%d sessions after malformed input, want none", n)
	}
	// Still serving.
	d.authorize(t)
	if out := d.put(t, udpTemp, "ok"); strings.Contains(out, "4.") {
		t.Fatalf("a proven publish after the junk: %q", out)
	}
}

// Options RFC 7252 §5.4 says must fail a request: a confirmable one is
// answered 4.02, a non-confirmable one is ignored, and neither publishes.
func TestCoAPBadOptionsPublishNothing(t *testing.T) {
	g := startCoAPGateway(t)
	svc := g.telemetry(t)
	dc := g.dialRawDTLS(t)
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
