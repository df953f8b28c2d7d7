package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// wirePacket encodes pk for protocol version v as a client would send it.
func wirePacket(tb testing.TB, pk packets.Packet, v byte) []byte {
	tb.Helper()
	var b bytes.Buffer
	pk.ProtocolVersion = v
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		pk.Connect.ProtocolName = []byte("MQTT")
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Puback:
		err = pk.PubackEncode(&b)
	case packets.Pubrec:
		err = pk.PubrecEncode(&b)
	case packets.Pubrel:
		err = pk.PubrelEncode(&b)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	case packets.Unsubscribe:
		err = pk.UnsubscribeEncode(&b)
	case packets.Pingreq:
		err = pk.PingreqEncode(&b)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&b)
	case packets.Auth:
		err = pk.AuthEncode(&b)
	default:
		err = fmt.Errorf("no encoder for type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// connectWire is a CONNECT for device with its token: MQTT 5 with
// Authentication Method ace, or 3.1.1 with the token as password.
func connectWire(tb testing.TB, device, token string, v5 bool) []byte {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: device}}
	if v5 {
		pk.Properties.AuthenticationMethod = "ace"
		pk.Properties.AuthenticationData = []byte(token)
		return wirePacket(tb, pk, 5)
	}
	pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(device)
	pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(token)
	return wirePacket(tb, pk, 4)
}

// readWirePacket reads one packet's type and body.
func readWirePacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return h >> 4, body, err
}

// rawSession is an authenticated MQTT session on a raw socket.
type rawSession struct {
	conn net.Conn
	r    *bufio.Reader
}

// rawConnect opens a session for device on a raw TCP socket; the CONNACK
// must accept it.
func rawConnect(tb testing.TB, addr, device, token string, v5 bool) (*rawSession, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(opTimeout))
	s := &rawSession{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write(connectWire(tb, device, token, v5)); err != nil {
		conn.Close()
		return nil, err
	}
	typ, body, err := readWirePacket(s.r)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("no CONNACK: %w", err)
	}
	if typ != packets.Connack || len(body) < 2 || body[1] != 0 {
		conn.Close()
		return nil, fmt.Errorf("CONNACK type %d % x, want success", typ, body)
	}
	return s, nil
}

// drain sends FIN and reads what the gateway sends until it closes the
// connection: the gateway has then read and handled every byte written.
func (s *rawSession) drain(limit time.Duration) error {
	defer s.conn.Close()
	if tc, ok := s.conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, s.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the gateway kept the connection open %v after the client's FIN", limit)
	}
	return nil // EOF or a reset: closed
}

// fuzzSeeds are well-formed packets of an authenticated thermo-1 session
// for version v (PUBLISH at each QoS, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
// AUTH, DISCONNECT), and all of them in one write.
func fuzzSeeds(tb testing.TB, v byte) [][]byte {
	const topic = "devices/thermo-1/telemetry/t"
	var out [][]byte
	add := func(pk packets.Packet) { out = append(out, wirePacket(tb, pk, v)) }
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: []byte("21.5")})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: topic, Payload: []byte("21.5")})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 2, TopicName: topic, Payload: []byte("21.5")})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 2})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "devices/thermo-1/status", Payload: []byte("up")})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "devices/thermo-2/telemetry/t", Payload: []byte("x")}) // not allowed
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 3,
		Filters: packets.Subscriptions{{Filter: "devices/thermo-1/commands/#", Qos: 1}, {Filter: "devices/thermo-1/status", Qos: 2}}})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 4,
		Filters: packets.Subscriptions{{Filter: "$share/g/devices/thermo-1/commands/#", Qos: 0}, {Filter: "#", Qos: 0}}})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 5,
		Filters: packets.Subscriptions{{Filter: "devices/thermo-1/commands/#"}}})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: packets.CodeReAuthenticate.Code,
		Properties: packets.Properties{AuthenticationMethod: "ace", AuthenticationData: []byte("not-a-token")}})
	add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	out = append(out, bytes.Join(out, nil))
	return out
}

// liveFuzz is the one gateway of a fuzz process (each worker runs the
// FuzzLiveGateway body, and so starts its own, once).
type liveFuzz struct {
	g      *gw
	tokens map[string]string // device -> token, 23 hours long
	good   *client           // thermo-2, subscribed to its status topic
	inputs atomic.Uint64
}

// liveCheckEvery is how often (in inputs) the good client's round trip is
// checked; every input also waits until the gateway has closed the fuzz
// connection and looks for a recovered panic in the log.
const liveCheckEvery = 10

// quietTB drops Log calls: the harness copies gateway logs to t.Log under
// -v, and F.Log from a gateway goroutine while the fuzz target runs panics.
type quietTB struct{ testing.TB }

func (quietTB) Log(...any)          {}
func (quietTB) Logf(string, ...any) {}

func startLiveFuzz(f *testing.F) *liveFuzz {
	g := startGatewayTB(quietTB{f})
	lf := &liveFuzz{g: g, tokens: map[string]string{}}
	for _, d := range []string{"thermo-1", "thermo-2"} {
		lf.tokens[d] = g.token(d, d, func(c map[string]any) { c["exp"] = time.Now().Add(23 * time.Hour).Unix() })
	}
	lf.good = g.mustConnect(connOpts{clientID: "thermo-2", token: lf.tokens["thermo-2"]})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if sa, err := lf.good.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/thermo-2/status", QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		f.Fatalf("good client's SUBSCRIBE: %v %v", sa, err)
	}
	return lf
}

// takePanics moves the gateway's log out of the harness buffer (so a long
// fuzz run holds no more than one input's lines) and returns the lines of a
// packet panic that the patched mochi recovered. mochi logs them before it
// closes the connection, so they belong to the input just drained.
func (lf *liveFuzz) takePanics() string {
	logs := lf.g.logs.Take()
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `msg="packet handling panicked`) || strings.Contains(l, `msg="packet encoding panicked`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// roundTrip checks that the good client still publishes and receives.
func (lf *liveFuzz) roundTrip(t *testing.T, n uint64) {
	select {
	case <-lf.good.done:
		t.Fatalf("the good client's connection ended")
	default:
	}
	payload := fmt.Sprintf("rt-%d", n)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	r, err := lf.good.c.Publish(ctx, &paho.Publish{Topic: "devices/thermo-2/status", QoS: 1, Payload: []byte(payload)})
	if err != nil || r == nil || r.ReasonCode != 0 {
		t.Fatalf("good client's PUBLISH: %v %v", r, err)
	}
	lf.good.expectMsg(t, "devices/thermo-2/status", payload)
}

// FuzzLiveGateway writes each input as raw packets on an authenticated
// session (MQTT 5 or 3.1.1) of a real in-process gateway. The gateway must
// stay up, handle the bytes without panicking (a panic recovered by the
// patched mochi is logged, and counts as a failure here), close the
// connection when the client does, and keep serving another client's
// PUBLISH/SUBSCRIBE round trips.
//
//	go test -run='^$' -fuzz='^FuzzLiveGateway$' -fuzztime=2000x ./edge/
func FuzzLiveGateway(f *testing.F) {
	f.Add(subscribeWithoutOptionsByte, true)
	f.Add(subscribeWithoutOptionsByte, false)
	for _, v5 := range []bool{true, false} {
		v := byte(4)
		if v5 {
			v = 5
		}
		for _, s := range fuzzSeeds(f, v) {
			f.Add(s, v5)
		}
	}
	lf := startLiveFuzz(f)
	addr := lf.g.g.Addr("tcp")
	f.Fuzz(func(t *testing.T, data []byte, v5 bool) {
		n := lf.inputs.Add(1)
		s, err := rawConnect(t, addr, "thermo-1", lf.tokens["thermo-1"], v5)
		if err != nil {
			t.Fatalf("fuzz session: %v (gateway log: %s)", err, lf.g.logs.String())
		}
		_ = s.conn.SetWriteDeadline(time.Now().Add(opTimeout))
		_, _ = s.conn.Write(data) // the gateway may close before all is written
		if err := s.drain(opTimeout); err != nil {
			t.Fatal(err)
		}
		if p := lf.takePanics(); p != "" {
			t.Fatalf("the gateway recovered a panic handling % x:\n%s", data, p)
		}
		if n == 1 || n%liveCheckEvery == 0 {
			lf.roundTrip(t, n)
		}
	})
}
