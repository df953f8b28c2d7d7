package edge_test

import (
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

// A device revocation whose revoked_at is before the session opened (an old
// unpair replayed by a snapshot) cuts nothing new, as on MQTT.
func TestCoAPOldDeviceRevocationSparesNewSession(t *testing.T) {
	g := startCoAPGateway(t)
	g.observe(t, "devices/coap-1/commands/set", "24")
	waitFor(t, "session", func() bool { return g.g.CoAP.Sessions(coapDevice) == 1 })
	old := time.Now().Add(-time.Hour)
	if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeDevice, Value: coapDevice, RevokedAt: old, ExpiresAt: time.Now().Add(2 * time.Hour)},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // give a wrong end time to happen (not a timing assertion)
	if n := g.g.CoAP.Sessions(coapDevice); n == 0 {
		t.Fatal("a PSK session opened after revoked_at was ended by an old device revocation")
	}
}
