package cloudsync_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/store"
)

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
		err := cloudsync.Check(&c.b, "gw", cur)
		var rj *cloudsync.Reject
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.reason != "" && (!errors.As(err, &rj) || rj.Reason != c.reason):
			t.Errorf("%s: err %v, want reason %s", c.name, err, c.reason)
		}
	}
}

func TestSignVerify(t *testing.T) {
	mk := func() jwk.Key {
		p, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		k, _ := jwk.Import(p)
		_ = k.Set(jwk.AlgorithmKey, jwa.ES256())
		return k
	}
	key, other := mk(), mk()
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
	var rj *cloudsync.Reject
	if _, err := cloudsync.Verify(forged, pub); !errors.As(err, &rj) || rj.Reason != "bad_signature" {
		t.Fatalf("batch signed by another key: %v", err)
	}
}
