package edge_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// subscribeWithoutOptionsByte is the MQTT 5 SUBSCRIBE (packet id 1, no
// properties, filter "fuzz/fuzz-0/#") whose filter lacks its options byte.
// Upstream mochi v2.7.9 indexed past the end of the packet: one such packet
// from any authenticated client stopped the whole gateway.
var subscribeWithoutOptionsByte = []byte{0x82, 0x12, 0x00, 0x01, 0x00, 0x00, 0x0d,
	'f', 'u', 'z', 'z', '/', 'f', 'u', 'z', 'z', '-', '0', '/', '#'}

// subscribe311WithoutQoS is the 3.1.1 form: the filter lacks its QoS byte.
var subscribe311WithoutQoS = []byte{0x82, 0x11, 0x00, 0x01, 0x00, 0x0d,
	'f', 'u', 'z', 'z', '/', 'f', 'u', 'z', 'z', '-', '0', '/', '#'}

// expectServerClose waits for the gateway to close s (whatever it sends
// first, a DISCONNECT say, is read and dropped) without the client closing.
func expectServerClose(t *testing.T, s *rawSession) {
	t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(opTimeout))
	_, err := io.Copy(io.Discard, s.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the gateway did not close the connection that sent a malformed packet")
	}
}

// crashFixture is a gateway with a paho MQTT 5 service client subscribed to
// every device's telemetry.
func crashFixture(t *testing.T) (*gw, *client) {
	g := startGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if r := svc.subscribe(t, "devices/+/telemetry/#"); r[0] != 1 {
		t.Fatalf("SUBSCRIBE answered %v", r)
	}
	return g, svc
}

func TestSubscribeWithoutOptionsByteDoesNotStopGateway(t *testing.T) {
	g, svc := crashFixture(t)
	dev := g.mustConnect(connOpts{clientID: "thermo-2", token: g.token("thermo-2", "thermo-2", nil)})
	dev.publish(t, "devices/thermo-2/telemetry/t", "before", 1)
	svc.expectMsg(t, "devices/thermo-2/telemetry/t", "before")

	bad, err := rawConnect(t, g.g.Addr("tcp"), "thermo-1", g.token("thermo-1", "thermo-1", nil), true)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.conn.Close()
	if _, err := bad.conn.Write(subscribeWithoutOptionsByte); err != nil {
		t.Fatal(err)
	}
	expectServerClose(t, bad)

	// The gateway is up: the paho clients keep their round trips, and the
	// device that sent the packet can connect again.
	for _, p := range []string{"after-1", "after-2"} {
		if code := dev.publish(t, "devices/thermo-2/telemetry/t", p, 1); code != 0 {
			t.Fatalf("PUBLISH after the malformed SUBSCRIBE answered %s", hexCode(code))
		}
		svc.expectMsg(t, "devices/thermo-2/telemetry/t", p)
	}
	again := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "thermo-1", nil)})
	again.publish(t, "devices/thermo-1/telemetry/t", "back", 1)
	svc.expectMsg(t, "devices/thermo-1/telemetry/t", "back")
	// Refused by the decoder (malformed), not by a recovered panic.
	if logs := g.logs.String(); strings.Contains(logs, "panicked") {
		t.Fatalf("the SUBSCRIBE made the decoder panic (recovered):\n%s", logs)
	}
}

func TestMalformed311PacketClosesOnlyThatClient(t *testing.T) {
	g, svc := crashFixture(t)
	addr := g.g.Addr("tcp")
	// A 3.1.1 bystander on a raw socket and the one that misbehaves.
	by, err := rawConnect(t, addr, "thermo-2", g.token("thermo-2", "thermo-2", nil), false)
	if err != nil {
		t.Fatal(err)
	}
	defer by.conn.Close()
	bad, err := rawConnect(t, addr, "thermo-1", g.token("thermo-1", "thermo-1", nil), false)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.conn.Close()
	publish := func(id uint16, payload string) {
		t.Helper()
		if _, err := by.conn.Write(wirePacket(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: id,
			TopicName: "devices/thermo-2/telemetry/t", Payload: []byte(payload)}, 4)); err != nil {
			t.Fatal(err)
		}
		_ = by.conn.SetReadDeadline(time.Now().Add(opTimeout))
		typ, body, err := readWirePacket(by.r)
		if err != nil || typ != packets.Puback || len(body) != 2 || body[1] != byte(id) {
			t.Fatalf("3.1.1 bystander's PUBLISH: type %d % x %v, want PUBACK %d", typ, body, err, id)
		}
		svc.expectMsg(t, "devices/thermo-2/telemetry/t", payload)
	}
	publish(1, "before")

	for _, pk := range [][]byte{subscribe311WithoutQoS} {
		if _, err := bad.conn.Write(pk); err != nil {
			t.Fatal(err)
		}
		expectServerClose(t, bad)
	}

	publish(2, "after")
	// The bystander's session is otherwise untouched: PINGREQ answered.
	if _, err := by.conn.Write([]byte{0xc0, 0}); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readWirePacket(by.r); err != nil || typ != packets.Pingresp {
		t.Fatalf("PINGREQ after the malformed packet: type %d, %v", typ, err)
	}
	// And the misbehaving device may connect again, as 3.1.1.
	again, err := rawConnect(t, addr, "thermo-1", g.token("thermo-1", "thermo-1", nil), false)
	if err != nil {
		t.Fatalf("reconnect after the malformed packet: %v", err)
	}
	again.conn.Close()
	if logs := g.logs.String(); strings.Contains(logs, "panicked") {
		t.Fatalf("the packet made the decoder panic (recovered):\n%s", logs)
	}
}
