package edge_test

import (
	"context"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/store"
)

func throttled(dev config.Rates, subj config.Rates, persist int) gwOpt {
	return func(c *configT) { c.Throttle = config.Throttle{Device: dev, Subject: subj, Persist: persist} }
}

func TestThrottle(t *testing.T) {
	t.Run("device message rate", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{MessagesPerSecond: 0.01, MessageBurst: 3}, config.Rates{}, 0))
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		var codes []byte
		for i := 0; i < 5; i++ {
			codes = append(codes, dev.publish(t, "devices/thermo-1/telemetry/t", "x", 1))
		}
		if string(codes) != string([]byte{0, 0, 0, 0x97, 0x97}) {
			t.Fatalf("PUBACK codes %x, want 3 accepted then 0x97", codes)
		}
	})
	t.Run("QoS 0 over the rate is dropped and counted", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{MessagesPerSecond: 0.01, MessageBurst: 3}, config.Rates{}, 0))
		if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-5", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}}, nil); err != nil {
			t.Fatal(err)
		}
		svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
		svc.subscribe(t, "devices/+/telemetry/#")
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		for _, p := range []string{"1", "2", "3", "4", "5", "6"} {
			dev.publish(t, "devices/thermo-1/telemetry/t", p, 0)
		}
		// QoS 0 is not acknowledged: wait until the broker has handled all six
		// before the marker goes out on another connection.
		waitFor(t, "the six publishes handled", func() bool {
			c := &g.g.Broker.Counters
			return c.Throttled.Load() == 3 && c.MessagesIn.Load() == 3
		})
		marker := g.mustConnect(connOpts{clientID: "thermo-5", token: g.token("thermo-5", "thermo-5", nil)})
		marker.publish(t, "devices/thermo-5/telemetry/t", "marker", 1)
		var got []string
		for m := range svc.msgs {
			if string(m.Payload) == "marker" {
				break
			}
			got = append(got, string(m.Payload))
		}
		if strings.Join(got, ",") != "1,2,3" {
			t.Fatalf("delivered %v, want the first 3 only", got)
		}
		if n := g.g.Broker.Counters.Throttled.Load(); n != 3 {
			t.Fatalf("throttled counter %d, want 3", n)
		}
	})
	t.Run("persistent abuse disconnects with 0x96", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{MessagesPerSecond: 0.01, MessageBurst: 1}, config.Rates{}, 3))
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		codes := []byte{dev.publish(t, "devices/thermo-1/telemetry/t", "x", 1), dev.publish(t, "devices/thermo-1/telemetry/t", "x", 1),
			dev.publish(t, "devices/thermo-1/telemetry/t", "x", 1)}
		if string(codes) != string([]byte{0, 0x97, 0x97}) {
			t.Fatalf("codes %x", codes)
		}
		// The third refusal in a row ends the session; its PUBACK never comes.
		go dev.c.Publish(context.Background(), &paho.Publish{Topic: "devices/thermo-1/telemetry/t", Payload: []byte("x"), QoS: 1})
		if code := dev.expectDisconnect(t); code != 0x96 {
			t.Fatalf("DISCONNECT %s, want 0x96 (codes before: %x)", hexCode(code), codes)
		}
	})
	t.Run("subject rate across devices", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{}, config.Rates{MessagesPerSecond: 0.01, MessageBurst: 2}, 0))
		if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-5", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}}, nil); err != nil {
			t.Fatal(err)
		}
		a := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		b := g.mustConnect(connOpts{clientID: "thermo-5", token: g.token("thermo-5", "alice", nil)})
		codes := []byte{a.publish(t, "devices/thermo-1/telemetry/t", "x", 1), a.publish(t, "devices/thermo-1/telemetry/t", "x", 1),
			b.publish(t, "devices/thermo-5/telemetry/t", "x", 1)}
		if string(codes) != string([]byte{0, 0, 0x97}) {
			t.Fatalf("codes %x: alice's third message (from another device) must be refused", codes)
		}
	})
	t.Run("byte rate", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{BytesPerSecond: 0.01, ByteBurst: 100}, config.Rates{}, 0))
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		p := strings.Repeat("x", 60)
		codes := []byte{dev.publish(t, "devices/thermo-1/telemetry/t", p, 1), dev.publish(t, "devices/thermo-1/telemetry/t", p, 1)}
		if string(codes) != string([]byte{0, 0x97}) {
			t.Fatalf("codes %x: 120 bytes over a 100-byte burst", codes)
		}
	})
}
