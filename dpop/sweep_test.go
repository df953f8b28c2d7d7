package dpop

import (
	"crypto/elliptic"
	"testing"
	"time"
)

// Sweep forgets what can no longer be replayed, and nothing that can: a
// quiet Verifier after a burst of proofs gives their ids back.
func TestSweep(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	v := verifier(c, Options{})
	req := Request{Method: "POST", URL: tokenURL}
	var proofs []string
	for range 3 {
		p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
		if _, err := v.Verify(p, req); err != nil {
			t.Fatal(err)
		}
		proofs = append(proofs, p)
	}
	v.Sweep(t0.Add(30 * time.Second)) // within the generation: kept
	if v.Held() != 3 {
		t.Fatalf("after a sweep within MaxAge+Skew: %d held, want 3", v.Held())
	}
	c.now = t0.Add(30 * time.Second)
	_, err := v.Verify(proofs[0], req)
	wantErr(t, err, CodeInvalidProof, "replayed")
	v.Sweep(t0.Add(70 * time.Second)) // one generation on: still kept (as the previous one)
	if v.Held() != 3 {
		t.Fatalf("after one generation: %d held, want 3", v.Held())
	}
	v.Sweep(t0.Add(140 * time.Second))
	if v.Held() != 0 {
		t.Fatalf("two generations on: %d held, want 0", v.Held())
	}
	// A quiet store for long: everything goes at once.
	p, _ := Sign(k, "POST", tokenURL, "", "", t0.Add(200*time.Second))
	c.now = t0.Add(200 * time.Second)
	if _, err := v.Verify(p, req); err != nil {
		t.Fatal(err)
	}
	v.Sweep(t0.Add(time.Hour))
	if v.Held() != 0 {
		t.Fatalf("an hour on: %d held", v.Held())
	}
}
