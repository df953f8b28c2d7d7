package coap

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

// An unknown PSK identity is refused from the cached index: it costs no
// scan of the store's devices, however many are tried. A device added
// afterwards is found once the index is invalidated (as the store watcher
// does on every device change).
func TestUnknownPSKIdentityScansNothing(t *testing.T) {
	ts := startTestServer(t, 3, Options{})
	_ = ts.dialPSK(t, 0).Close()
	if n := ts.psks.builds.Load(); n != 1 {
		t.Fatalf("%d index builds after the first handshake, want 1", n)
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ts.handshake(fmt.Sprintf("stranger-%d", i), pskKey(0), 2*time.Second) == nil {
				t.Errorf("an unknown identity was taken")
			}
		}()
	}
	wg.Wait()
	waitFor(t, "20 refused identities", func() bool { return ts.logs.count("unknown psk identity") >= 20 })
	if n := ts.psks.builds.Load(); n != 1 {
		t.Fatalf("%d index builds after 20 unknown identities, want still 1", n)
	}
	if _, err := ts.st.Apply(&store.Batch{Devices: []store.Device{{ID: "dev-new", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PSKIdentity: "dev-new-identity", PSK: []byte(pskKey(1))}}}, nil); err != nil {
		t.Fatal(err)
	}
	ts.InvalidatePSKs()
	_ = ts.dialIdentity(t, "dev-new-identity", pskKey(1)).Close()
	if n := ts.psks.builds.Load(); n != 2 {
		t.Fatalf("%d index builds after a device change, want 2", n)
	}
}
