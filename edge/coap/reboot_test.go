package coap

import (
	"context"
	"fmt"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message/pool"
)

// A device that reboots while observing never says goodbye: its old DTLS
// session lives on with its observation for observe_idle_timeout. Each
// reboot here is a new session that observes and is then abandoned, never
// closed or cancelled; every one of them must be served, and the device's
// sessions and observations stay within their caps: 8 sessions (what 16
// observations, the default, meet first) and MaxObservations (what 2 meets
// first). The plain-UDP case, which needs a token and proofs, is in edge/
// (TestCoAPRebootWhileObservingUDP).
const reboots = 12

func TestCoAPRebootWhileObservingDTLS(t *testing.T) {
	for _, maxObs := range []int{16, 2} {
		t.Run(fmt.Sprintf("max_observations %d", maxObs), func(t *testing.T) { rebootDTLS(t, maxObs) })
	}
}

func rebootDTLS(t *testing.T, maxObs int) {
	ts := startTestServer(t, 1, Options{MaxObservations: maxObs})
	const device = "dev-0"
	psk := coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(pskKey(0)), nil }),
		piondtls.WithPSKIdentityHint([]byte(pskIdentity(0))),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	served := 0
	for i := range reboots {
		cc, err := coapdtls.Dial(ts.Addr(), psk)
		if err != nil {
			t.Fatalf("boot %d: handshake: %v", i, err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cc.Observe(ctx, "/ps/devices/"+device+"/commands/set", func(*pool.Message) {})
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
	if n := ts.Sessions(device); n > 8 {
		t.Errorf("%d sessions of one device, want at most 8", n)
	}
	if n, want := ts.Observations(device), min(maxObs, 8); n != want {
		t.Errorf("%d observations, want the newest %d", n, want)
	}
}
