package authority_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/edgeid/edgeid/store"
)

// Issue 16: DecidePairing wrote the pairing's state after, and outside, the
// commit that paired the device: a failure between the two left the device
// paired and its poll never approved. Now there is no "between": the
// device's owner, the pairing's state and the spent user code are one
// store commit (store.Batch.Docs; the store's own tests show such a commit
// is all or nothing). A denial is one commit of documents alone.
func TestDecidePairingIsOneCommit(t *testing.T) {
	f := newFixture(t)
	f.classes()
	var mu sync.Mutex
	var applied []*store.Batch
	f.a.Store.Watch(func(a store.Applied) {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, a.Batch)
	})
	d := f.keyDevice("speaker-1")
	dc, uc := d.start(t)
	mu.Lock()
	applied = nil
	mu.Unlock()
	if err := f.a.DecidePairing(uc, "alice", true); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := applied
	mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("the approval made %d store commits, want 1", len(got))
	}
	b := got[0]
	if len(b.Devices) != 1 || b.Devices[0].Owner != "alice" || b.Expect[store.DeviceKey("speaker-1")] == 0 {
		t.Fatalf("the commit does not pair the device on condition of its revision: %+v", b)
	}
	var approved, spent bool
	for _, w := range b.Docs {
		raw, _ := json.Marshal(w.Value)
		switch {
		case w.Kind == "device-code" && strings.Contains(string(raw), `"state":"approved"`) && strings.Contains(string(raw), `"owner":"alice"`):
			approved = true
		case w.Kind == "user-code" && w.Delete && w.ExpectVersion != 0:
			spent = true
		}
	}
	if !approved || !spent {
		t.Fatalf("the commit that pairs the device does not also approve the pairing (%v) and spend the code (%v): %+v", approved, spent, b.Docs)
	}
	if code, m := d.poll(dc); code != 200 {
		t.Fatalf("poll: %d %v", code, m)
	}
}
