package coap

import (
	"expvar"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/store"
)

// badgerIterators is Badger's count of iterators made (every range read,
// in every store of the process).
func badgerIterators(t *testing.T) int64 {
	t.Helper()
	v, ok := expvar.Get("badger_iterator_num_user").(*expvar.Int)
	if !ok {
		t.Fatal("badger's iterator count is not published")
	}
	return v.Value()
}

// An unknown PSK identity is refused by a point read of the store's PSK
// index: no scan of the store's devices at all (not one iterator), however
// many are tried. A device added or renamed afterwards is found (or not) at
// once, with nothing to invalidate.
func TestUnknownPSKIdentityScansNothing(t *testing.T) {
	ts := startTestServer(t, 3, Options{})
	_ = ts.dialPSK(t, 0).Close()

	// The count is live: a scan of the devices moves it.
	before := badgerIterators(t)
	if _, err := ts.st.Devices(); err != nil {
		t.Fatal(err)
	}
	if badgerIterators(t) == before {
		t.Fatal("badger's iterator count did not move for a scan; the test below would prove nothing")
	}

	lookups := ts.psks.lookups.Load()
	before = badgerIterators(t)
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
	if n := badgerIterators(t) - before; n != 0 {
		t.Fatalf("%d store iterators made for 20 unknown identities, want none", n)
	}
	if n := ts.psks.lookups.Load() - lookups; n < 20 {
		t.Fatalf("%d psk lookups for 20 unknown identities, want at least 20", n)
	}

	// Added: found at once.
	newDev := store.Device{ID: "dev-new", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PSKIdentity: "dev-new-identity", PSK: []byte(pskKey(1))}
	if _, err := ts.st.Apply(&store.Batch{Devices: []store.Device{newDev}}, nil); err != nil {
		t.Fatal(err)
	}
	_ = ts.dialIdentity(t, "dev-new-identity", pskKey(1)).Close()

	// Renamed: the old identity is unknown at once, the new one works.
	newDev.PSKIdentity = "dev-new-identity-2"
	if _, err := ts.st.Apply(&store.Batch{Devices: []store.Device{newDev}}, nil); err != nil {
		t.Fatal(err)
	}
	if ts.handshake("dev-new-identity", pskKey(1), 2*time.Second) == nil {
		t.Fatal("the identity a device gave up was still taken")
	}
	_ = ts.dialIdentity(t, "dev-new-identity-2", pskKey(1)).Close()
}

// A PSK must be 16 to 64 bytes, come with an identity and the identity be
// unique; the store refuses the rest without showing the key.
func TestCoAPPSKValidation(t *testing.T) {
	ts := startTestServer(t, 0, Options{})
	dev := func(id, identity string, key []byte) store.Device {
		return store.Device{ID: id, Class: "thermostat", Status: store.DeviceActive, PSKIdentity: identity, PSK: key}
	}
	long := []byte(pskKey(0))
	for _, c := range []struct {
		name string
		b    store.Batch
		want string
	}{
		{"short key", store.Batch{Devices: []store.Device{dev("p1", "id1", []byte("short"))}}, ".psk must be 16 to 64 bytes"},
		{"key without identity", store.Batch{Devices: []store.Device{dev("p1", "", long)}}, ".psk_identity is empty"},
		{"identity without key", store.Batch{Devices: []store.Device{dev("p1", "id1", nil)}}, ".psk is empty"},
		{"shared identity", store.Batch{Devices: []store.Device{dev("p1", "same", long), dev("p2", "same", long)}}, "PSK identities must be unique"},
	} {
		_, err := ts.st.Apply(&c.b, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), string(long)) {
			t.Errorf("%s: the error shows the key", c.name)
		}
	}
}
