package edge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/config"
)

// A device that reboots while observing never says goodbye: its old
// plain-UDP source port lives on with its observation for
// observe_idle_timeout. Each reboot here is a new session that observes and
// is then abandoned, never closed or cancelled; every one of them must be
// served, and the device's sessions and observations stay within their caps:
// 8 sessions (what 16 observations, the default, meet first) and
// coap.max_observations (what 2 meets first). The DTLS case, which needs only
// a coap.Server, is in edge/coap (TestCoAPRebootWhileObservingDTLS).
const reboots = 12

func TestCoAPRebootWhileObservingUDP(t *testing.T) {
	for _, maxObs := range []int{16, 2} {
		t.Run(fmt.Sprintf("max_observations %d", maxObs), func(t *testing.T) { rebootUDP(t, maxObs) })
	}
}

func rebootUDP(t *testing.T, maxObs int) {
	g, d := startUDPGateway(t, func(c *config.Config) { c.CoAP.MaxObservations = maxObs })
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); len(out) > 0 && out[0] == '4' {
		t.Fatalf("authz-info: %q", out)
	}
	const cmd = "/ps/devices/udp-1/commands/set"
	served := 0
	for i := range reboots {
		cc, err := udp.Dial(g.g.CoAP.UDPAddr()) // a new source port: a new session
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		proof := d.proof(t, d.key, codes.GET, cmd, d.token, "", time.Now(), observing)
		_, err = cc.Observe(ctx, cmd, func(*pool.Message) {}, message.Option{ID: coap.OptionProof, Value: []byte(proof)})
		cancel()
		if err != nil {
			t.Logf("boot %d: observe: %v", i, err)
			continue
		}
		served++
	}
	if served != reboots {
		t.Fatalf("%d of %d boots could observe; the device locked itself out", served, reboots)
	}
	if n := g.g.CoAP.Sessions("udp-1"); n > 8 {
		t.Errorf("%d sessions of one device, want at most 8", n)
	}
	if n, want := g.g.CoAP.Observations("udp-1"), min(maxObs, 8); n != want {
		t.Errorf("%d observations, want the newest %d", n, want)
	}
}
