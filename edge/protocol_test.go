package edge_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
)

// raw is an MQTT connection driven packet by packet, for what stock clients
// will not send (or will not show).
type raw struct {
	t    *testing.T
	c    net.Conn
	r    *bufio.Reader
	ver  byte
	next uint16
}

func (g *gw) raw(t *testing.T, ver byte) *raw {
	t.Helper()
	c, err := net.Dial("tcp", g.g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c, r: bufio.NewReader(c), ver: ver}
}

func (r *raw) send(pk packets.Packet) {
	r.t.Helper()
	pk.ProtocolVersion = r.ver
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(&buf)
	default:
		r.t.Fatalf("raw: cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(buf.Bytes()); err != nil {
		r.t.Fatal(err)
	}
}

// recv reads one packet; io.EOF when the gateway closed the connection.
func (r *raw) recv() (packets.Packet, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(opTimeout))
	var pk packets.Packet
	b, err := r.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(r.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = r.ver
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	}
	return pk, err
}

// closed asserts the gateway closes the connection without sending anything.
func (r *raw) closed(why string) {
	r.t.Helper()
	pk, err := r.recv()
	if err == nil {
		r.t.Fatalf("%s: got packet type %d (reason 0x%02x), want the connection closed with nothing sent", why, pk.FixedHeader.Type, pk.ReasonCode)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("%s: connection still open", why)
	}
}

func (r *raw) connect(id, user string, password []byte, props packets.Properties) packets.Packet {
	r.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Properties: props,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id}}
	if user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(user)
	}
	if password != nil {
		pk.Connect.PasswordFlag, pk.Connect.Password = true, password
	}
	r.send(pk)
	ack, err := r.recv()
	if err != nil {
		r.t.Fatalf("connect %s: %v", id, err)
	}
	return ack
}

func (r *raw) mustConnect(id, token string) {
	r.t.Helper()
	if ack := r.connect(id, id, []byte(token), packets.Properties{}); ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		r.t.Fatalf("connect %s: type %d code 0x%02x", id, ack.FixedHeader.Type, ack.ReasonCode)
	}
}

func (r *raw) publish(topic string, payload []byte, qos byte, props packets.Properties) uint16 {
	r.next++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, Payload: payload, Properties: props}
	if qos > 0 {
		pk.PacketID = r.next
	}
	r.send(pk)
	return r.next
}

// MQTT 3.1.1 has no server DISCONNECT: a revoked or kicked 3.1.1 session
// is closed, with nothing written to it.
func TestV311KickSendsNoDisconnect(t *testing.T) {
	g := startGateway(t)
	r := g.raw(t, 4)
	r.mustConnect("thermo-1", g.token("thermo-1", "thermo-1", nil))
	if _, err := g.admin().Kick(g.ctx(), admin.KickRequest{Device: "thermo-1"}); err != nil {
		t.Fatal(err)
	}
	r.closed("3.1.1 session kicked")

	// mochi's own disconnects: a QoS 1 PUBLISH the session may not make ...
	r = g.raw(t, 4)
	r.mustConnect("thermo-1", g.token("thermo-1", "thermo-1", nil))
	r.publish("devices/thermo-2/telemetry/temp", []byte("1"), 1, packets.Properties{})
	r.closed("3.1.1 QoS 1 publish refused")

	// ... and a session taken over by a new connection of its client id.
	r = g.raw(t, 4)
	r.mustConnect("thermo-1", g.token("thermo-1", "thermo-1", nil))
	r2 := g.raw(t, 4)
	r2.mustConnect("thermo-1", g.token("thermo-1", "thermo-1", nil))
	r.closed("3.1.1 session taken over")
}

// [MQTT-3.1.2-22]: in 3.1.1 a password needs a user name. Such a CONNECT is
// a protocol violation: closed without a CONNACK (3.1.1 defines no code for it).
func TestV311PasswordWithoutUsername(t *testing.T) {
	g := startGateway(t)
	r := g.raw(t, 4)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "thermo-1",
			PasswordFlag: true, Password: []byte(g.token("thermo-1", "thermo-1", nil))}})
	r.closed("3.1.1 CONNECT with a password and no user name")
}

// A refused 3.1.1 CONNECT is answered with a return code 3.1.1 defines (1..5).
func TestV311RefusalCodes(t *testing.T) {
	g := startGateway(t)
	for _, tc := range []struct {
		name, id, token string
		want            byte
	}{
		{"bad token", "thermo-1", "not-a-token", 0x04},
		{"suspended device", "thermo-3", g.token("thermo-3", "thermo-3", nil), 0x05},
		{"wrong client id", "thermo-9", g.token("thermo-1", "thermo-1", nil), 0x02},
	} {
		r := g.raw(t, 4)
		ack := r.connect(tc.id, tc.id, []byte(tc.token), packets.Properties{})
		if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != tc.want {
			t.Errorf("%s: type %d code 0x%02x, want CONNACK 0x%02x", tc.name, ack.FixedHeader.Type, ack.ReasonCode, tc.want)
		}
	}
}

// CONNACK advertises no Topic Alias Maximum, so a PUBLISH using an alias is
// a protocol error: DISCONNECT 0x94 (MQTT 5 §3.3.2.3.4).
func TestTopicAliasRefused(t *testing.T) {
	g := startGateway(t)
	r := g.raw(t, 5)
	ack := r.connect("thermo-1", "thermo-1", []byte(g.token("thermo-1", "thermo-1", nil)), packets.Properties{})
	if ack.ReasonCode != 0 || ack.Properties.TopicAliasMaximum != 0 {
		t.Fatalf("CONNACK 0x%02x, topic alias maximum %d; want 0x00 and none", ack.ReasonCode, ack.Properties.TopicAliasMaximum)
	}
	r.publish("devices/thermo-1/telemetry/temp", []byte("1"), 1, packets.Properties{TopicAlias: 1, TopicAliasFlag: true})
	pk, err := r.recv()
	if err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x94 {
		t.Fatalf("after an aliased PUBLISH: type %d code 0x%02x err %v, want DISCONNECT 0x94", pk.FixedHeader.Type, pk.ReasonCode, err)
	}
}

// Acks carry no properties of the PUBLISH they answer (strict clients
// reject them, and a stored PUBREC must not keep the PUBLISH alive).
func TestAcksCarryNoPublishProperties(t *testing.T) {
	g := startGateway(t)
	r := g.raw(t, 5)
	if ack := r.connect("thermo-1", "thermo-1", []byte(g.token("thermo-1", "thermo-1", nil)), packets.Properties{}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	user := []packets.UserProperty{{Key: "k", Val: strings.Repeat("v", 1000)}}
	for _, qos := range []byte{1, 2} {
		r.publish("devices/thermo-1/telemetry/temp", []byte("1"), qos, packets.Properties{User: user})
		pk, err := r.recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(pk.Properties.User) != 0 {
			t.Fatalf("QoS %d ack carries %d user properties of the PUBLISH", qos, len(pk.Properties.User))
		}
	}
}

// A throttled QoS 2 PUBLISH is answered PUBREC 0x97, not PUBACK (MQTT 5 §4.3.3).
func TestThrottledQoS2GetsPubrec(t *testing.T) {
	g := startGateway(t, func(c *config.Config) {
		c.Throttle.Device = config.Rates{MessagesPerSecond: 0.01, MessageBurst: 1}
		c.Throttle.Persist = 100
	})
	r := g.raw(t, 5)
	if ack := r.connect("thermo-1", "thermo-1", []byte(g.token("thermo-1", "thermo-1", nil)), packets.Properties{}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	for i, want := range []byte{0x00, 0x97} {
		r.publish("devices/thermo-1/telemetry/temp", []byte("1"), 2, packets.Properties{})
		pk, err := r.recv()
		if err != nil || pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode != want {
			t.Fatalf("QoS 2 publish %d: type %d code 0x%02x err %v, want PUBREC 0x%02x", i, pk.FixedHeader.Type, pk.ReasonCode, err, want)
		}
	}
}

// Issue 18.2: unreleased QoS 2 PUBLISHes are bounded per client (Receive
// Maximum: the one past it ends the connection with 0x93) and over the
// gateway (past mqtt.max_inflight_qos2: PUBREC 0x97); they are counted, hold
// none of the PUBLISH's properties, and are freed when a clean session ends.
func TestUnreleasedQoS2Bounded(t *testing.T) {
	g := startGateway(t, func(c *config.Config) { c.MQTT.ReceiveMaximum = 4; c.MQTT.MaxInflightQoS2 = 6 })
	user := []packets.UserProperty{{Key: "k", Val: strings.Repeat("v", 50000)}}
	held := func() int64 { return g.g.Broker.Server.QoS2Held.Load() }

	a := g.raw(t, 5)
	if ack := a.connect("thermo-1", "thermo-1", []byte(g.token("thermo-1", "thermo-1", nil)), packets.Properties{}); ack.ReasonCode != 0 || ack.Properties.ReceiveMaximum != 4 {
		t.Fatalf("CONNACK 0x%02x receive maximum %d", ack.ReasonCode, ack.Properties.ReceiveMaximum)
	}
	for i := 0; i < 4; i++ {
		a.publish("devices/thermo-1/telemetry/temp", nil, 2, packets.Properties{User: user})
		if pk, err := a.recv(); err != nil || pk.FixedHeader.Type != packets.Pubrec || pk.ReasonCode != 0 {
			t.Fatalf("publish %d: type %d code 0x%02x err %v", i, pk.FixedHeader.Type, pk.ReasonCode, err)
		}
	}
	if n := held(); n != 4 {
		t.Fatalf("held %d, want 4", n)
	}
	cl, ok := g.g.Broker.Server.Clients.Get("thermo-1")
	if !ok {
		t.Fatal("no client")
	}
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if len(pk.Properties.User) > 0 {
			t.Fatalf("stored PUBREC %d holds the PUBLISH's user properties", pk.PacketID)
		}
	}
	a.publish("devices/thermo-1/telemetry/temp", nil, 2, packets.Properties{})
	if pk, err := a.recv(); err != nil || pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x93 {
		t.Fatalf("5th unreleased QoS 2: type %d code 0x%02x err %v, want DISCONNECT 0x93", pk.FixedHeader.Type, pk.ReasonCode, err)
	}
	waitFor(t, "held freed after the clean session ended", func() bool { return held() == 0 })

	// Gateway-wide: two clients, 6 at most together.
	b := g.raw(t, 5)
	b.mustConnectV5(g, "thermo-1")
	c := g.raw(t, 5)
	if ack := c.connect("acme-cloud", "acme-cloud", []byte(g.token("acme-cloud", "acme-cloud", nil)), packets.Properties{}); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	codes := []byte{}
	for i := 0; i < 4; i++ {
		b.publish("devices/thermo-1/telemetry/temp", nil, 2, packets.Properties{})
		pk, _ := b.recv()
		codes = append(codes, pk.ReasonCode)
	}
	for i := 0; i < 3; i++ {
		c.publish("devices/thermo-1/commands/set", nil, 2, packets.Properties{})
		pk, _ := c.recv()
		codes = append(codes, pk.ReasonCode)
	}
	if !bytes.Equal(codes, []byte{0, 0, 0, 0, 0, 0, 0x97}) {
		t.Fatalf("PUBREC codes %x, want six 0x00 then 0x97", codes)
	}
	if n := held(); n != 6 {
		t.Fatalf("held %d, want 6", n)
	}
}

func (r *raw) mustConnectV5(g *gw, id string) {
	r.t.Helper()
	if ack := r.connect(id, id, []byte(g.token(id, id, nil)), packets.Properties{}); ack.ReasonCode != 0 {
		r.t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
}

// Issue 18.3: the byte rate counts the whole packet, so data carried in
// user properties is throttled as payload is.
func TestByteThrottleCountsProperties(t *testing.T) {
	g := startGateway(t, func(c *config.Config) {
		c.Throttle.Device = config.Rates{BytesPerSecond: 10, ByteBurst: 3000}
		c.Throttle.Persist = 100
	})
	r := g.raw(t, 5)
	r.mustConnectV5(g, "thermo-1")
	user := []packets.UserProperty{{Key: "k", Val: strings.Repeat("v", 1400)}}
	var codes []byte
	for i := 0; i < 3; i++ {
		r.publish("devices/thermo-1/telemetry/temp", []byte("x"), 1, packets.Properties{User: user})
		pk, err := r.recv()
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, pk.ReasonCode)
	}
	// ~1.45 KB a packet against a 3,000-byte burst: two pass, the third is refused.
	if !bytes.Equal(codes, []byte{0, 0, 0x97}) {
		t.Fatalf("PUBACK codes %x, want 00 00 97", codes)
	}
}

// Issue 18.5: a malformed packet is logged as a bounded line (never the
// packet), and repeats from one client are rate-limited.
func TestMalformedPacketLogBounded(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "thermo-1", nil)
	big := bytes.Repeat([]byte("A"), 180<<10)
	for i := 0; i < 20; i++ {
		r := g.raw(t, 5)
		r.mustConnect("thermo-1", tok)
		// A wildcard in a PUBLISH topic is a protocol error the broker logs.
		r.publish("devices/thermo-1/telemetry/#", big, 0, packets.Properties{})
		r.closedOrDisconnected()
	}
	var n int
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if len(line) > 2048 {
			t.Fatalf("log line of %d bytes: %.200s...", len(line), line)
		}
		if strings.Contains(line, "error processing packet") {
			n++
		}
	}
	if n == 0 || n > 6 {
		t.Fatalf("%d 'error processing packet' lines for 20 malformed packets from one client, want 1..6", n)
	}
}

// closedOrDisconnected waits for the gateway to end the connection (MQTT 5
// DISCONNECT, then close).
func (r *raw) closedOrDisconnected() {
	r.t.Helper()
	for {
		pk, err := r.recv()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatal("connection still open")
			}
			return
		}
		_ = pk
	}
}

// Issue 18.4: no outbound topic aliases, so every delivered PUBLISH and every
// one resent to a resumed session carries its topic name, even to a client
// that allows aliases.
func TestDeliveriesAndResendsCarryTopic(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "thermo-1", nil)
	connect := func(clean bool) *raw {
		r := g.raw(t, 5)
		r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Properties: packets.Properties{TopicAliasMaximum: 10, SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 30, ClientIdentifier: "thermo-1",
				UsernameFlag: true, Username: []byte("thermo-1"), PasswordFlag: true, Password: []byte(tok)}})
		if ack, err := r.recv(); err != nil || ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %v %v", ack.ReasonCode, err)
		}
		return r
	}
	dev := connect(true)
	dev.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "devices/thermo-1/commands/#", Qos: 1}}})
	if pk, err := dev.recv(); err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("SUBACK: %v %v", pk.FixedHeader.Type, err)
	}
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	for i := 0; i < 2; i++ {
		cloud.pub(t, "devices/thermo-1/commands/set", "c", 1, nil)
		pk, err := dev.recv()
		if err != nil || pk.TopicName != "devices/thermo-1/commands/set" || pk.Properties.TopicAlias != 0 {
			t.Fatalf("delivery %d: topic %q alias %d err %v", i, pk.TopicName, pk.Properties.TopicAlias, err)
		}
	}
	// Neither was acknowledged: both are resent to the resumed session.
	dev.c.Close()
	waitFor(t, "offline", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	dev = connect(false)
	for i := 0; i < 2; i++ {
		pk, err := dev.recv()
		if err != nil || pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Dup || pk.TopicName != "devices/thermo-1/commands/set" {
			t.Fatalf("resend %d: type %d dup %v topic %q err %v", i, pk.FixedHeader.Type, pk.FixedHeader.Dup, pk.TopicName, err)
		}
	}
}
