package edge_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/config"
)

// A message that waited for send quota keeps its Message Expiry: past it,
// it is not delivered (mochi marked waiting messages with Expiry -1).
func TestWaitingMessageKeepsExpiryOffline(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	tok := g.token("thermo-1", "thermo-1", nil)
	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600, receiveMax: 1})
	dev.sub(t, "devices/thermo-1/commands/#", "devices/thermo-1/status")
	dev.drop()
	waitFor(t, "parked", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	exp := uint32(1)
	cloud.pub(t, "devices/thermo-1/commands/set", "cmd-1", 1, nil)
	cloud.pub(t, "devices/thermo-1/commands/set", "expires-in-1s", 1, &paho.PublishProperties{MessageExpiry: &exp})
	waitFor(t, "2 queued", func() bool { return g.g.Broker.OfflineQueued() == 2 })
	time.Sleep(2500 * time.Millisecond)
	dev = g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: false, expiry: 600, receiveMax: 10})
	dev.pub(t, "devices/thermo-1/status", "marker", 1, nil)
	got := dev.receiveUntil(t, "marker")
	for _, m := range got {
		if m == "devices/thermo-1/commands/set=expires-in-1s" {
			t.Fatalf("expired message delivered: %v", got)
		}
	}
}

// The same on a live connection: a waiting message with a 1 s expiry is
// not delivered 3 s later.
func TestWaitingMessageKeepsExpiryLive(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	dev := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, receiveMax: 1, manualAck: true})
	dev.sub(t, "devices/thermo-1/commands/#")
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	exp := uint32(1)
	cloud.pub(t, "devices/thermo-1/commands/set", "cmd-1", 1, nil)
	cloud.pub(t, "devices/thermo-1/commands/set", "expires-in-1s", 1, &paho.PublishProperties{MessageExpiry: &exp})
	first := dev.next(t)
	time.Sleep(3 * time.Second)
	_ = dev.c.Ack(first)
	select {
	case m := <-dev.msgs:
		t.Fatalf("expired waiting message delivered 3 s late: %s=%q expiry prop %v", m.Topic, m.Payload, m.Properties.MessageExpiry)
	case <-time.After(2 * time.Second):
	}
}

// A message sent after waiting for quota stays stored until its PUBACK,
// which gives the quota back: with Receive Maximum 1 every command arrives
// (mochi deleted it when written, so the quota leaked and delivery stopped).
func TestSendQuotaNotLeaked(t *testing.T) {
	g := startGateway(t)
	dev := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, receiveMax: 1, manualAck: true})
	dev.sub(t, "devices/thermo-1/commands/#")
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	for i := 1; i <= 3; i++ {
		cloud.pub(t, "devices/thermo-1/commands/set", fmt.Sprint("cmd-", i), 1, nil)
	}
	for i := 1; i <= 3; i++ {
		select {
		case m := <-dev.msgs:
			if string(m.Payload) != fmt.Sprint("cmd-", i) {
				t.Fatalf("delivery %d: %q, want cmd-%d in order", i, m.Payload, i)
			}
			_ = dev.c.Ack(m)
		case <-time.After(5 * time.Second):
			cl, _ := g.g.Broker.Server.Clients.Get("thermo-1")
			t.Fatalf("cmd-%d never delivered; inflight %d", i, cl.State.Inflight.Len())
		}
	}
}

func connectPersistent(r *raw, id, token string) packets.Packet {
	r.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 30, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte(token)}}
	r.send(pk)
	ack, err := r.recv()
	if err != nil {
		r.t.Fatalf("connect: %v", err)
	}
	return ack
}

// Unreleased QoS 2 PUBLISHes inherited by a resumed session still count
// against its Receive Maximum, so one device cannot fill the gateway-wide cap
// by reconnecting (mochi reset the quota to full at every resume).
func TestQoS2BoundSurvivesReconnect(t *testing.T) {
	g := startGateway(t, func(c *config.Config) { c.MQTT.ReceiveMaximum = 4; c.MQTT.MaxInflightQoS2 = 12 })
	tok := g.token("thermo-1", "thermo-1", nil)
	id := uint16(0)
	for round := 0; round < 3; round++ {
		r := g.raw(t, 5)
		if ack := connectPersistent(r, "thermo-1", tok); ack.ReasonCode != 0 {
			t.Fatalf("connect 0x%02x", ack.ReasonCode)
		}
		r.next = id
		for i := 0; i < 4; i++ {
			// From the second round the session resumes holding four
			// unreleased QoS 2, which fill its receive quota: the gateway
			// may close the connection (receive maximum exceeded) before
			// all four are written, and that ends the round.
			if !r.publishMay("devices/thermo-1/telemetry/temp", 2) {
				break
			}
		}
		time.AfterFunc(500*time.Millisecond, func() { r.c.Close() })
		for {
			pk, err := r.recv()
			if err != nil {
				break
			}
			_ = pk
		}
		if n := g.g.Broker.Server.QoS2Held.Load(); n > 4 {
			t.Fatalf("round %d: one device with receive maximum 4 holds %d unreleased QoS 2", round, n)
		}
		id = r.next
		r.c.Close()
		waitFor(t, "parked", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	}
	c := g.raw(t, 5)
	c.mustConnectV5(g, "acme-cloud")
	c.publish("devices/thermo-1/commands/set", nil, 2, packets.Properties{})
	if pk, _ := c.recv(); pk.ReasonCode == 0x97 {
		t.Fatalf("another device's QoS 2 refused 0x97: one device holds %d", g.g.Broker.Server.QoS2Held.Load())
	}
}

// On resume, queued messages are written no faster than the client's
// Receive Maximum allows (mochi wrote the whole queue at once).
func TestResendHonoursReceiveMaximum(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "thermo-1", nil)
	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600, receiveMax: 2})
	dev.sub(t, "devices/thermo-1/commands/#")
	dev.drop()
	waitFor(t, "parked", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	for i := 1; i <= 6; i++ {
		cloud.pub(t, "devices/thermo-1/commands/set", fmt.Sprint("cmd-", i), 1, nil)
	}
	waitFor(t, "6 queued", func() bool { return g.g.Broker.OfflineQueued() == 6 })
	r := g.raw(t, 5)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true, ReceiveMaximum: 2},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 30, ClientIdentifier: "thermo-1",
			UsernameFlag: true, Username: []byte("thermo-1"), PasswordFlag: true, Password: []byte(tok)}}
	r.send(pk)
	if ack, err := r.recv(); err != nil || ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Fatalf("connack %v %v", ack.ReasonCode, err)
	}
	n := 0
	time.AfterFunc(1500*time.Millisecond, func() { r.c.Close() })
	for {
		p, err := r.recv()
		if err != nil {
			break
		}
		if p.FixedHeader.Type == packets.Publish {
			n++
		}
	}
	if n > 2 {
		t.Fatalf("%d unacknowledged PUBLISHes written to a client with Receive Maximum 2", n)
	}
}

// publishMay is publish for a connection the gateway may close meanwhile:
// it reports whether the write went through instead of failing the test.
func (r *raw) publishMay(topic string, qos byte) bool {
	r.next++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: r.next, ProtocolVersion: r.ver}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		r.t.Fatal(err)
	}
	_, err := r.c.Write(buf.Bytes())
	return err == nil
}
