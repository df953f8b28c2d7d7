package edge_test

import (
	"crypto/tls"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// A device that cannot speak HTTPS pairs through the gateway over MQTT:
// connected with its factory certificate, it asks on its own
// $edgeid/pair/<id>/request topic, shows the code, and polls the same way;
// its token is bound to that certificate.
func TestPairingRelayOverMQTT(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	x := startAuthority(t)
	files, err := demo.WriteTLS(t.TempDir(), "lamp-1")
	if err != nil {
		t.Fatal(err)
	}
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "lamp-1", Serial: "LMP-1", Class: "thermostat", Status: store.DeviceActive, CertSHA256: files.DeviceFingerprint}}})
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-r") })
	waitFor(t, "the lamp at the gateway", func() bool { _, err := g.g.Store.Device("lamp-1"); return err == nil })
	cert, _ := tls.LoadX509KeyPair(files.DeviceCert, files.DeviceKey)
	dev := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "lamp-1"})
	if r := dev.subscribe(t, "$edgeid/pair/lamp-1/response"); r[0] != 1 {
		t.Fatalf("subscribe to its own pairing answers: %x", r)
	}
	if r := dev.subscribe(t, "$edgeid/pair/thermo-1/response"); r[0] != 0x87 {
		t.Fatalf("subscribe to another device's pairing answers: %x, want 87", r)
	}
	ask := func(req map[string]any) map[string]any {
		b, _ := json.Marshal(req)
		if code := dev.publish(t, "$edgeid/pair/lamp-1/request", string(b), 1); code != 0 {
			t.Fatalf("pairing request: PUBACK %s", hexCode(code))
		}
		select {
		case m := <-dev.msgs:
			var out map[string]any
			_ = json.Unmarshal(m.Payload, &out)
			return out
		case <-time.After(20 * time.Second):
			t.Fatal("no pairing answer")
		}
		return nil
	}
	start := ask(map[string]any{"op": "start"})
	userCode, _ := start["user_code"].(string)
	deviceCode, _ := start["device_code"].(string)
	if userCode == "" || deviceCode == "" {
		t.Fatalf("start: %v", start)
	}
	if p := ask(map[string]any{"op": "poll", "device_code": deviceCode}); p["error"] != "authorization_pending" {
		t.Fatalf("poll before approval: %v", p)
	}
	if err := x.a.DecidePairing(userCode, "alice", true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // the RFC 8628 interval: a faster poll is told to slow down
	tok := ask(map[string]any{"op": "poll", "device_code": deviceCode})
	access, _ := tok["access_token"].(string)
	if access == "" {
		t.Fatalf("poll after approval: %v", tok)
	}
	if c := decodePayload(t, access); c["sub"] != "alice" || c["cnf"].(map[string]any)["x5t#S256"] == nil {
		t.Fatalf("relayed token: %v", c)
	}
	waitFor(t, "the pairing at the gateway", func() bool { d, _ := g.g.Store.Device("lamp-1"); return d.Owner == "alice" })
	paired := g.mustConnect(connOpts{tls: true, cert: &cert, clientID: "lamp-1", token: access})

	// Another device's request topic is not a channel to anyone.
	if code := paired.publish(t, "$edgeid/pair/thermo-1/request", `{"op":"start"}`, 1); code != 0x87 {
		t.Fatalf("publishing another device's pairing request: %s, want 0x87", hexCode(code))
	}
}
