package cloudsync_test

import (
	"errors"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

// newKey is a fresh ES256 signing key.
func newKey(t *testing.T) jwk.Key {
	t.Helper()
	k, err := cloudsync.NewES256Key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// isReject reports whether err is a *cloudsync.Reject for reason.
func isReject(err error, reason string) bool {
	var rj *cloudsync.Reject
	return errors.As(err, &rj) && rj.Reason == reason
}

// wantReason checks the outcome of case name of a check: accepted for
// reason "", else refused for that reason.
func wantReason(t *testing.T, name string, err error, reason string) {
	t.Helper()
	switch {
	case reason == "" && err != nil:
		t.Errorf("%s: refused: %v", name, err)
	case reason != "" && !isReject(err, reason):
		t.Errorf("%s: err %v, want reason %s", name, err, reason)
	}
}

func TestCheckSequence(t *testing.T) {
	cur := store.Cursor{Epoch: "e1", Seq: 10, SnapshotIssued: 100}
	cases := []struct {
		name   string
		b      cloudsync.Batch
		reason string // "" = accepted
	}{
		{"next delta", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 10, To: 11}, ""},
		{"replayed delta", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 9, To: 10}, "rollback"},
		{"old delta", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 3, To: 4}, "rollback"},
		{"gap", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 11, To: 12}, "gap"},
		{"two steps at once", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 10, To: 12}, "malformed"},
		{"backwards range", cloudsync.Batch{Gateway: "gw", Epoch: "e1", From: 10, To: 9}, "malformed"},
		{"another gateway", cloudsync.Batch{Gateway: "gw2", Epoch: "e1", From: 10, To: 11}, "wrong_gateway"},
		{"another epoch, delta", cloudsync.Batch{Gateway: "gw", Epoch: "e2", From: 10, To: 11}, "wrong_epoch"},
		{"another epoch, snapshot", cloudsync.Batch{Gateway: "gw", Epoch: "e2", To: 3, Snapshot: true, IssuedAt: 100}, ""},
		{"same epoch, newer snapshot", cloudsync.Batch{Gateway: "gw", Epoch: "e1", To: 12, Snapshot: true, IssuedAt: 100}, ""},
		{"same epoch, older snapshot", cloudsync.Batch{Gateway: "gw", Epoch: "e1", To: 8, Snapshot: true}, "rollback"},
		{"snapshot of another epoch issued before the last applied", cloudsync.Batch{Gateway: "gw", Epoch: "e0", To: 50, Snapshot: true, IssuedAt: 99}, "rollback"},
		{"snapshot of another epoch issued after", cloudsync.Batch{Gateway: "gw", Epoch: "e2", To: 1, Snapshot: true, IssuedAt: 101}, ""},
	}
	for _, c := range cases {
		wantReason(t, c.name, cloudsync.Check(&c.b, "gw", cur), c.reason)
	}
}

func TestSignVerify(t *testing.T) {
	key, other := newKey(t), newKey(t)
	pub, _ := key.PublicKey()
	b := &cloudsync.Batch{Gateway: "gw", Epoch: "e", From: 1, To: 2,
		Changes: store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "j"}}}}
	raw, err := cloudsync.Sign(b, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cloudsync.Verify(raw, pub)
	if err != nil || got.To != 2 || got.Changes.Revocations[0].Value != "j" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	forged, _ := cloudsync.Sign(b, other)
	if _, err := cloudsync.Verify(forged, pub); !isReject(err, "bad_signature") {
		t.Fatalf("batch signed by another key: %v", err)
	}
}
