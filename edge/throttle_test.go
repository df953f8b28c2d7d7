package edge_test

import (
	"context"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
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

// thermostat is the demo's thermostat class with limits of its own.
func thermostat(l *store.ClassLimits) store.DeviceClass {
	c := demo.Classes()[0]
	c.Limits = l
	return c
}

// burstOf is a rate too slow to refill during a test, with a burst: the
// counts below are exact.
func burstOf(burst int) store.Rates {
	return store.Rates{MessagesPerSecond: 0.01, MessageBurst: burst}
}

func (g *gw) mustImport(v any) {
	g.t.Helper()
	if _, err := g.importJSON(v); err != nil {
		g.t.Fatal(err)
	}
}

// addThermo5 adds a second thermostat of alice's and connects it as its own
// subject, so only the device and class limits apply to it.
func addThermo5(t *testing.T, g *gw) *client {
	t.Helper()
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-5", Class: "thermostat", Owner: "alice", Status: store.DeviceActive}}}, nil); err != nil {
		t.Fatal(err)
	}
	return g.mustConnect(connOpts{clientID: "thermo-5", token: g.token("thermo-5", "thermo-5", nil)})
}

func publishN(t *testing.T, c *client, topic string, n int) []byte {
	t.Helper()
	var codes []byte
	for i := 0; i < n; i++ {
		codes = append(codes, c.publish(t, topic, "x", 1))
	}
	return codes
}

func TestThrottleClassLimits(t *testing.T) {
	t.Run("a class's device limit replaces throttle.device for its devices", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{MessagesPerSecond: 0.01, MessageBurst: 10}, config.Rates{}, 0))
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(2)})}})
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 4); string(codes) != string([]byte{0, 0, 0x97, 0x97}) {
			t.Fatalf("thermostat codes %x, want its class's burst of 2 then 0x97", codes)
		}
		// The service class sets no limits: throttle.device's burst of 10.
		svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
		if codes := publishN(t, svc, "devices/thermo-1/commands/set", 11); string(codes) != string(append(make([]byte, 10), 0x97)) {
			t.Fatalf("service codes %x, want the configured burst of 10 then 0x97", codes)
		}
	})
	t.Run("a class limit is shared by the class's devices", func(t *testing.T) {
		g := startGateway(t, throttled(config.Rates{MessagesPerSecond: 0.01, MessageBurst: 5}, config.Rates{}, 0),
			func(c *configT) { c.Metrics.Listen = "127.0.0.1:0" })
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Class: burstOf(3)})}})
		a := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		b := addThermo5(t, g)
		// Two each, under their own burst of 5; together one over the class's 3.
		codes := append(publishN(t, a, "devices/thermo-1/telemetry/t", 2), publishN(t, b, "devices/thermo-5/telemetry/t", 2)...)
		if string(codes) != string([]byte{0, 0, 0, 0x97}) {
			t.Fatalf("codes %x, want the class's burst of 3 across both devices", codes)
		}
		if code := a.publish(t, "devices/thermo-1/telemetry/t", "x", 1); code != 0x97 {
			t.Fatalf("thermo-1 after the class ran out: %s, want 0x97", hexCode(code))
		}
		// Another class has its own budget.
		svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
		if codes := publishN(t, svc, "devices/thermo-1/commands/set", 5); string(codes) != string(make([]byte, 5)) {
			t.Fatalf("service codes %x, want all accepted", codes)
		}
		body := scrape(t, g)
		for prefix, want := range map[string]float64{
			`edgeid_throttle_refusals_total{limit="class"}`:  2,
			`edgeid_throttle_refusals_total{limit="device"}`: 0,
			`edgeid_throttled_total`:                         2,
		} {
			if got := metric(body, prefix); got != want {
				t.Errorf("%s = %v, want %v", prefix, got, want)
			}
		}
	})
	t.Run("a class limit change reaches a live session", func(t *testing.T) {
		g := startGateway(t)
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(10)})}})
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 2); string(codes) != string([]byte{0, 0}) {
			t.Fatalf("codes %x under a burst of 10", codes)
		}
		// 8 left; the burst shrinks to 3 on the same connection.
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(3)})}})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 4); string(codes) != string([]byte{0, 0, 0, 0x97}) {
			t.Fatalf("codes %x after the burst shrank to 3", codes)
		}
		// Raising it again does not hand out a fresh burst.
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Device: burstOf(10)})}})
		if code := dev.publish(t, "devices/thermo-1/telemetry/t", "x", 1); code != 0x97 {
			t.Fatalf("after raising the burst: %s, want still 0x97", hexCode(code))
		}
		// Dropping the class's limits (none configured either) lifts them.
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(nil)}})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 3); string(codes) != string([]byte{0, 0, 0}) {
			t.Fatalf("codes %x with no limit left", codes)
		}
	})
	t.Run("a device moved to another class takes that class's limits at once", func(t *testing.T) {
		g := startGateway(t)
		lite := thermostat(&store.ClassLimits{Class: burstOf(1)})
		lite.Name = "thermostat-lite"
		g.mustImport(store.Batch{Classes: []store.DeviceClass{lite}})
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 3); string(codes) != string([]byte{0, 0, 0}) {
			t.Fatalf("codes %x under the unlimited thermostat class", codes)
		}
		d, err := g.g.Store.Device("thermo-1")
		if err != nil {
			t.Fatal(err)
		}
		d.Class, d.Rev = "thermostat-lite", 0
		g.mustImport(store.Batch{Devices: []store.Device{d}})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 2); string(codes) != string([]byte{0, 0x97}) {
			t.Fatalf("codes %x on the same connection after the move, want the new class's burst of 1 then 0x97", codes)
		}
	})
	t.Run("throttle.class applies to a class without limits of its own", func(t *testing.T) {
		g := startGateway(t, func(c *configT) { c.Throttle.Class = config.Rates{MessagesPerSecond: 0.01, MessageBurst: 3} })
		a := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		b := addThermo5(t, g)
		codes := append(publishN(t, a, "devices/thermo-1/telemetry/t", 2), publishN(t, b, "devices/thermo-5/telemetry/t", 2)...)
		if string(codes) != string([]byte{0, 0, 0, 0x97}) {
			t.Fatalf("thermostat codes %x, want the configured class burst of 3 across both", codes)
		}
		// Each class has its own bucket of the configured size.
		svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
		if codes := publishN(t, svc, "devices/thermo-1/commands/set", 4); string(codes) != string([]byte{0, 0, 0, 0x97}) {
			t.Fatalf("service codes %x, want its own burst of 3", codes)
		}
		// A class record's limits.class replaces throttle.class for it
		// (the bucket keeps its state: the service class's is empty).
		g.mustImport(store.Batch{Classes: []store.DeviceClass{thermostat(&store.ClassLimits{Class: burstOf(100)})}})
		if codes := publishN(t, a, "devices/thermo-1/telemetry/t", 1); codes[0] != 0x97 {
			t.Fatalf("thermostat codes %x: a bigger burst must not refill the bucket", codes)
		}
	})
	t.Run("bad limits are refused by name and change nothing", func(t *testing.T) {
		g := startGateway(t)
		bad := thermostat(&store.ClassLimits{Device: burstOf(2), Class: store.Rates{MessagesPerSecond: 5}})
		_, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{bad},
			Devices: []store.Device{{ID: "thermo-9", Class: "thermostat", Status: store.DeviceActive}}})
		if err == nil || !strings.Contains(err.Error(), "classes[0].limits.class.message_burst must be at least 1 when messages_per_second is set") {
			t.Fatalf("import error %v, want the field named", err)
		}
		if c, err := g.g.Store.Class("thermostat"); err != nil || c.Limits != nil {
			t.Fatalf("thermostat after a refused import: %+v, %v; want no limits", c, err)
		}
		if _, err := g.g.Store.Device("thermo-9"); err == nil {
			t.Fatal("a refused import stored thermo-9")
		}
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		if codes := publishN(t, dev, "devices/thermo-1/telemetry/t", 5); string(codes) != string(make([]byte, 5)) {
			t.Fatalf("codes %x: the refused limits must not apply", codes)
		}
	})
}
