package edge_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// A CoAP device pairs through its gateway, only while the gateway's pairing
// window is open (the pair button, or edgeid pair).
func TestPairingRelayOverCoAP(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	x := startAuthority(t)
	key, _ := demo.NewIssuer("coap-1", "coap-1-key")
	pub, _ := key.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(), Devices: []store.Device{{ID: coapDevice, Class: "thermostat",
		Status: store.DeviceActive, PSKIdentity: coapID, PSK: []byte(coapKey), PublicKey: pubJSON}}})
	g := startGateway(t, func(c *configT) {
		c.Sync.Enrollment = x.enroll("gw-c")
		c.CoAP.DTLSListen = "127.0.0.1:0"
	})
	waitFor(t, "the device at the gateway", func() bool { _, err := g.g.Store.Device(coapDevice); return err == nil })
	uri := "coaps://" + g.g.CoAP.Addr() + "/pair"
	pair := func(body string) string { return g.coap(t, coapID, coapKey, "-m", "post", "-e", body, uri) }

	if out := pair(`{"op":"start"}`); !strings.Contains(out, "4.03") {
		t.Fatalf("pairing with the window closed: %q, want 4.03", out)
	}
	g.g.OpenPairing(time.Minute)
	out := pair(`{"op":"start"}`)
	var start map[string]any
	if i := strings.Index(out, "{"); i < 0 || json.Unmarshal([]byte(out[i:]), &start) != nil || start["user_code"] == nil {
		t.Fatalf("pairing start: %q", out)
	}
	poll := `{"op":"poll","device_code":"` + start["device_code"].(string) + `"}`
	out = pair(poll)
	if !strings.Contains(out, "authorization_pending") {
		t.Fatalf("poll before approval: %q", out)
	}
	if err := x.a.DecidePairing(start["user_code"].(string), "alice", true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second) // the RFC 8628 polling interval
	out = pair(poll)
	if !strings.Contains(out, "access_token") {
		t.Fatalf("poll after approval: %q", out)
	}
}
