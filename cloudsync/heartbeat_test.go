package cloudsync_test

import (
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// A heartbeat is believed only if it is for this gateway, not older than
// the newest one seen, does not name a lower head in the same epoch, and is
// not behind the cursor; one of another epoch asks for a snapshot unless it
// is older than the snapshot held.
func TestCheckHeartbeat(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cur := store.Cursor{Epoch: "e1", Seq: 10, SnapshotIssued: 900}
	last := &cloudsync.Heartbeat{Gateway: "gw", Epoch: "e1", Head: 12, Time: t0, IntervalMS: 15000}
	hb := func(mod func(*cloudsync.Heartbeat)) *cloudsync.Heartbeat {
		h := &cloudsync.Heartbeat{Gateway: "gw", Epoch: "e1", Head: 12, Time: t0.Add(time.Second), IntervalMS: 15000}
		mod(h)
		return h
	}
	cases := []struct {
		name   string
		h      *cloudsync.Heartbeat
		last   *cloudsync.Heartbeat
		reason string // "" = accepted
	}{
		{"newer, same head", hb(func(*cloudsync.Heartbeat) {}), last, ""},
		{"newer, higher head", hb(func(h *cloudsync.Heartbeat) { h.Head = 13 }), last, ""},
		{"the same one again", last, last, ""},
		{"first since start, at the cursor", hb(func(h *cloudsync.Heartbeat) { h.Head = 10 }), nil, ""},
		{"older than the newest seen", hb(func(h *cloudsync.Heartbeat) { h.Time = t0.Add(-time.Second); h.Head = 13 }), last, "rollback"},
		{"lower head than seen", hb(func(h *cloudsync.Heartbeat) { h.Head = 11 }), last, "rollback"},
		{"head behind the cursor", hb(func(h *cloudsync.Heartbeat) { h.Head = 9 }), nil, "rollback"},
		{"another gateway", hb(func(h *cloudsync.Heartbeat) { h.Gateway = "gw2" }), last, "wrong_gateway"},
		{"no time", hb(func(h *cloudsync.Heartbeat) { h.Time = time.Time{} }), nil, "malformed"},
		{"no interval", hb(func(h *cloudsync.Heartbeat) { h.IntervalMS = 0 }), nil, "malformed"},
		{"another epoch, newer than the snapshot", hb(func(h *cloudsync.Heartbeat) { h.Epoch = "e2"; h.Head = 1 }), last, "wrong_epoch"},
		{"another epoch, older than the snapshot", hb(func(h *cloudsync.Heartbeat) { h.Epoch = "e0"; h.Time = time.Unix(800, 0) }), nil, "rollback"},
	}
	for _, c := range cases {
		wantReason(t, c.name, cloudsync.CheckHeartbeat(c.h, "gw", cur, c.last), c.reason)
	}
}

// Heartbeats and batches are signed with the same key but different typs:
// neither verifies as the other.
func TestHeartbeatSignVerify(t *testing.T) {
	key := newKey(t)
	pub, _ := key.PublicKey()
	at := time.Now().Round(0)
	raw, err := cloudsync.SignHeartbeat(&cloudsync.Heartbeat{Gateway: "gw", Epoch: "e", Head: 7, Time: at, IntervalMS: 15000}, key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudsync.VerifyHeartbeat(raw, pub)
	if err != nil || h.Head != 7 || !h.Time.Equal(at) || h.Interval() != 15*time.Second {
		t.Fatalf("verify: %+v %v", h, err)
	}
	if _, err := cloudsync.Verify(raw, pub); !isReject(err, "malformed") {
		t.Errorf("heartbeat taken as a batch: %v", err)
	}
	batch, _ := cloudsync.Sign(&cloudsync.Batch{Gateway: "gw", Epoch: "e", From: 6, To: 7}, key)
	if _, err := cloudsync.VerifyHeartbeat(batch, pub); !isReject(err, "malformed") {
		t.Errorf("batch taken as a heartbeat: %v", err)
	}
	forged, _ := cloudsync.SignHeartbeat(&cloudsync.Heartbeat{Gateway: "gw", Epoch: "e", Head: 7, Time: at, IntervalMS: 15000}, newKey(t))
	if _, err := cloudsync.VerifyHeartbeat(forged, pub); !isReject(err, "bad_signature") {
		t.Errorf("heartbeat signed by another key: %v", err)
	}
}
