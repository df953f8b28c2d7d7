package edge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

// A revocation that names a device ends every live CoAP session of that
// device, whatever its credential: here a PSK session and a certificate
// session, each observing. A connect made afterwards is decided by the
// device record, which a revocation alone (an unpair) leaves active: the
// factory credential the next owner pairs with still works.
func TestCoAPDeviceRevocationEndsEverySession(t *testing.T) {
	g := startCoAPGateway(t)
	cert, key := g.files.DeviceCert, g.files.DeviceKey
	// The observers would stay 24 s, longer than waitFor waits: their
	// sessions can only end by the revocation.
	psk := g.observe(t, "devices/coap-1/commands/set", "24")
	crt := g.observeAs(t, "thermo-2", []string{"-c", cert, "-j", key, "-C", g.files.CACert}, certURI(g, "devices/thermo-2/commands/set"), "24")
	now := time.Now()
	if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeDevice, Value: coapDevice, RevokedAt: now, ExpiresAt: now.Add(2 * time.Hour)},
		{Kind: store.RevokeDevice, Value: "thermo-2", RevokedAt: now, ExpiresAt: now.Add(2 * time.Hour)},
	}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{coapDevice, "thermo-2"} {
		waitFor(t, dev+"'s sessions to end", func() bool { return g.g.CoAP.Sessions(dev) == 0 })
	}
	psk.waitFor(t, "4.03")
	crt.waitFor(t, "4.03")
	if out := g.coap(t, coapID, coapKey, "-m", "put", "-e", "after", g.coapURI("devices/coap-1/telemetry/temp")); strings.Contains(out, "4.") {
		t.Errorf("a PSK connect after the revocation (device still active): %q", out)
	}
	if out := g.coapCert(t, cert, key, "-m", "put", "-e", "after", certURI(g, "devices/thermo-2/telemetry/temp")); strings.Contains(out, "4.") {
		t.Errorf("a certificate connect after the revocation (device still active): %q", out)
	}
}
