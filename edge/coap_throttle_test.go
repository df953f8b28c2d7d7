package edge_test

import (
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Rate limits on CoAP are the MQTT ones (Broker.Throttle): per device from
// the class record, per class across its devices, per token subject. Every
// rate is one per 1000 s, so only the bursts count and nothing waits.

func thermostatWith(l store.ClassLimits) store.DeviceClass {
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			c.Limits = &l
			return c
		}
	}
	panic("no thermostat class")
}

// tally counts coap-client answers: accepted, 4.29, other.
func tally(outs ...string) (ok, tooMany, other int) {
	for _, out := range outs {
		switch {
		case strings.Contains(out, "4.29"):
			tooMany++
		case strings.Contains(out, "4.") || strings.Contains(out, "5."):
			other++
		default:
			ok++
		}
	}
	return
}

func TestCoAPThrottle(t *testing.T) {
	g := startCoAPGateway(t, func(c *config.Config) {
		// 3 at once, then one per 1000 s: the test never waits for a refill.
		c.Throttle.Device = config.Rates{MessagesPerSecond: 0.001, MessageBurst: 3}
	})
	var outs []string
	for range 6 {
		outs = append(outs, g.coap(t, coapID, coapKey, "-m", "put", "-e", "1", g.coapURI("devices/coap-1/telemetry/temp")))
	}
	if ok, tooMany, other := tally(outs...); ok != 3 || tooMany != 3 {
		t.Fatalf("%d accepted, %d 4.29, %d other; want 3 accepted and 3 refused with 4.29", ok, tooMany, other)
	}
}

func TestCoAPClassThrottle(t *testing.T) {
	g := startCoAPGateway(t)
	const key2 = "coap-2-secret-key-0123456789abcd"
	g.addPSKDevice("coap-2", "coap-2-identity", key2)
	put := func(id, key, device string) string {
		return g.coap(t, id, key, "-m", "put", "-e", "1", g.coapURI("devices/"+device+"/telemetry/temp"))
	}

	// The class bucket first: device buckets a later limit shrinks keep
	// what they hold, so the order keeps every count exact.
	t.Run("limits.class shared by the devices of the class", func(t *testing.T) {
		if _, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{thermostatWith(store.ClassLimits{
			Class: store.Rates{MessagesPerSecond: 0.001, MessageBurst: 3}})}}); err != nil {
			t.Fatal(err)
		}
		ok, tooMany, _ := tally(put(coapID, coapKey, coapDevice), put("coap-2-identity", key2, "coap-2"),
			put(coapID, coapKey, coapDevice), put("coap-2-identity", key2, "coap-2"), put(coapID, coapKey, coapDevice))
		if ok != 3 || tooMany != 2 {
			t.Fatalf("two thermostats together: %d accepted, %d 4.29; want 3 and 2", ok, tooMany)
		}
		// An MQTT thermostat shares the same class bucket: it is spent.
		dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
		if code := dev.publish(t, "devices/thermo-1/telemetry/temp", "1", 1); code != 0x97 {
			t.Errorf("MQTT thermostat after the class burst: %s, want 0x97", hexCode(code))
		}
	})
	t.Run("limits.device from the class record", func(t *testing.T) {
		if _, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{thermostatWith(store.ClassLimits{
			Device: store.Rates{MessagesPerSecond: 0.001, MessageBurst: 2}})}}); err != nil {
			t.Fatal(err)
		}
		ok, tooMany, other := tally(put(coapID, coapKey, coapDevice), put(coapID, coapKey, coapDevice), put(coapID, coapKey, coapDevice))
		if ok != 2 || tooMany != 1 || other != 0 {
			t.Fatalf("coap-1: %d accepted, %d 4.29, %d other; want 2, 1, 0", ok, tooMany, other)
		}
		// coap-2 has its own bucket.
		if ok, _, _ := tally(put("coap-2-identity", key2, "coap-2")); ok != 1 {
			t.Fatal("coap-2 refused: the device limit is per device")
		}
	})
}

func TestCoAPSubjectThrottle(t *testing.T) {
	_, d := startUDPGateway(t, func(c *config.Config) {
		c.Throttle.Subject = config.Rates{MessagesPerSecond: 0.001, MessageBurst: 2}
	})
	d.authorize(t)
	var outs []string
	for i := range 3 {
		outs = append(outs, d.put(t, udpTemp, string(rune('a'+i))))
	}
	if ok, tooMany, other := tally(outs...); ok != 2 || tooMany != 1 || other != 0 {
		t.Fatalf("token subject alice: %d accepted, %d 4.29, %d other; want 2, 1, 0: %q", ok, tooMany, other, outs)
	}
}

func TestCoAPByteRateAndConnectLimit(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	t.Run("byte rate", func(t *testing.T) {
		g := startCoAPGateway(t, func(c *config.Config) {
			c.Throttle.Device = config.Rates{BytesPerSecond: 0.001, ByteBurst: 10}
		})
		six := func() string {
			return g.coap(t, coapID, coapKey, "-m", "put", "-e", "123456", g.coapURI("devices/coap-1/telemetry/temp"))
		}
		if ok, tooMany, other := tally(six(), six()); ok != 1 || tooMany != 1 || other != 0 {
			t.Fatalf("two 6-byte readings under a 10-byte burst: %d accepted, %d 4.29, %d other; want 1, 1, 0", ok, tooMany, other)
		}
	})
	t.Run("new sessions per source address", func(t *testing.T) {
		g := startCoAPGateway(t, func(c *config.Config) {
			c.MQTT.ConnectRate, c.MQTT.ConnectBurst = 0.001, 2
		})
		// Failed handshakes count: a PSK being guessed is held off as well.
		outs := []string{
			g.coap(t, coapID, "wrong-key-wrong-key-wrong-key-00", "-B", "2", "-m", "put", "-e", "1", g.coapURI("devices/coap-1/telemetry/temp")),
			g.coap(t, coapID, coapKey, "-B", "2", "-m", "put", "-e", "1", g.coapURI("devices/coap-1/telemetry/temp")),
			g.coap(t, coapID, coapKey, "-B", "2", "-m", "put", "-e", "1", g.coapURI("devices/coap-1/telemetry/temp")),
		}
		if ok, _, _ := tally(outs[1]); ok != 1 {
			t.Fatalf("the second attempt, with the right key: %q", outs[1])
		}
		// The third is refused (each retransmitted ClientHello again).
		if n := strings.Count(g.logs.String(), "too many new sessions from this address"); n < 1 {
			t.Fatalf("no handshake refused by the per-address limit: %q\n%s", outs, g.logs.String())
		}
		if n := strings.Count(g.logs.String(), "coap connected"); n != 1 {
			t.Fatalf("%d sessions made, want only the second attempt's", n)
		}
	})
}
