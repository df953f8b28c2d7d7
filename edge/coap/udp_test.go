package coap

import (
	"fmt"
	"testing"
	"time"
)

func TestReplayGuard(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	g := &replayGuard{perDevice: 3, total: 5}
	if err := g.use("a", "1", t0); err != nil {
		t.Fatal(err)
	}
	// A proof is good for ±ProofWindow around its iat: its id must be
	// remembered for all of that, across a generation change.
	for _, at := range []time.Duration{0, ProofWindow, 2*ProofWindow + time.Second, 2 * ProofWindow * 2} {
		if err := g.use("a", "1", t0.Add(at)); err == nil {
			t.Fatalf("id reused after %s was taken", at)
		}
	}
	// The same id from another device is another proof.
	if err := g.use("b", "1", t0); err != nil {
		t.Fatal(err)
	}
	// A device's share, then the total, are refused, never evicted.
	g = &replayGuard{perDevice: 3, total: 5}
	for i := range 3 {
		if err := g.use("a", fmt.Sprint(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.use("a", "x", t0); err == nil {
		t.Fatal("a device's fourth proof in a generation of 3 was taken")
	}
	for i := range 2 {
		if err := g.use("b", fmt.Sprint(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.use("c", "0", t0); err == nil {
		t.Fatal("a proof beyond the total was taken")
	}
	// Old generations go: after two windows of 2×ProofWindow the ids are gone
	// and the shares are free again.
	later := t0.Add(4*ProofWindow + 2*time.Second)
	g.use("z", "rotate", later.Add(-2*ProofWindow))
	if err := g.use("a", "x", later); err != nil {
		t.Fatalf("a device's share after its ids aged out: %v", err)
	}
}
