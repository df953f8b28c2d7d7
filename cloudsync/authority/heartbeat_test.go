package authority_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// Every changes answer carries a heartbeat signed with the feed key for the
// asking gateway, naming the head of the log as it stood when the answer
// was made, and the stream interval.
func TestChangesCarryHeartbeat(t *testing.T) {
	f := newFixtureWith(t, nil)
	rev, err := f.a.Apply(&store.Batch{Users: []store.User{{ID: "u1", Status: store.UserActive}}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	f.enrollAt("gw-1", "")
	before := time.Now()
	resp, err := f.a.Changes("gw-1", f.a.Epoch(), 0, 500)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := f.a.FeedPublicKey()
	pub, err := jwk.ParseKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudsync.VerifyHeartbeat(resp.Heartbeat, pub)
	if err != nil {
		t.Fatal(err)
	}
	if h.Gateway != "gw-1" || h.Epoch != f.a.Epoch() || h.Head != rev || h.Time.Before(before) || h.Interval() != cloudsync.DefaultHeartbeatInterval {
		t.Fatalf("heartbeat %+v, want gw-1 at head %d", h, rev)
	}
	if uint64(len(resp.Batches)) != rev {
		t.Fatalf("%d batches up to head %d", len(resp.Batches), rev)
	}
	// A gateway from before heartbeats decodes the answer as it always did.
	var old struct{ Batches []string }
	b, _ := json.Marshal(resp)
	if err := json.Unmarshal(b, &old); err != nil || len(old.Batches) != len(resp.Batches) {
		t.Fatalf("old decoding: %v", err)
	}
}
