package coap

import (
	"context"
	"fmt"
	"testing"
	"time"

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// A device that reboots while observing never says goodbye: its old DTLS
// session, or its old plain-UDP source port, lives on with its observation
// for observe_idle_timeout. Each reboot here is a new session that observes
// and is then abandoned, never closed or cancelled; every one of them must
// be served, and the device's sessions and observations stay within their
// caps: 8 sessions (what 16 observations, the default, meet first) and
// MaxObservations (what 2 meets first).
const reboots = 12

func TestCoAPRebootWhileObservingDTLS(t *testing.T) {
	for _, maxObs := range []int{16, 2} {
		t.Run(fmt.Sprintf("max_observations %d", maxObs), func(t *testing.T) {
			ts := startTestServer(t, 1, Options{MaxObservations: maxObs})
			psk := coapdtls.NewDTLSClientOptions(pskOptions(pskIdentity(0), pskKey(0))...)
			rebootWhileObserving(t, ts, "dev-0", maxObs, func() (*udpClient.Conn, error) { return coapdtls.Dial(ts.Addr(), psk) }, nil)
		})
	}
}

func TestCoAPRebootWhileObservingUDP(t *testing.T) {
	for _, maxObs := range []int{16, 2} {
		t.Run(fmt.Sprintf("max_observations %d", maxObs), func(t *testing.T) {
			ts := startTestServer(t, 0, Options{MaxObservations: maxObs, UDPListen: "127.0.0.1:0"})
			d := ts.addKeyDevice(t, "udp-1")
			ts.authorize(t, d)
			observe := func(path string) []message.Option {
				zero := uint32(0)
				return []message.Option{d.proofOption(t, Request{Method: codes.GET, URI: path, Observe: &zero})}
			}
			// A new source port: a new session.
			rebootWhileObserving(t, ts, d.id, maxObs, func() (*udpClient.Conn, error) { return udp.Dial(ts.UDPAddr()) }, observe)
		})
	}
}

// rebootWhileObserving boots device reboots times: each boot dials a new
// session and observes the device's commands (with opts(path), when set),
// then abandons it.
func rebootWhileObserving(t *testing.T, ts *testServer, device string, maxObs int, dial func() (*udpClient.Conn, error), opts func(path string) []message.Option) {
	path := "/ps/devices/" + device + "/commands/set"
	served := 0
	for i := range reboots {
		cc, err := dial()
		if err != nil {
			t.Fatalf("boot %d: dial: %v", i, err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		var o []message.Option
		if opts != nil {
			o = opts(path)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cc.Observe(ctx, path, func(*pool.Message) {}, o...)
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
