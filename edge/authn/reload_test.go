package authn_test

import (
	"testing"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// A token signed with a key the store has but the verifier has not loaded
// yet (a sync committed, the gateway's reload not run) verifies after one
// reload; tokens with unknown kids reload at most once a second.
func TestVerifierReloadsOnUnknownKey(t *testing.T) {
	old := newIssuer(t, issA, "old-1")
	fresh := newIssuer(t, issA, "new-1")
	v := newVerifier(t, defaultConfig(), old)
	trusted := []store.Issuer{record(t, old)}
	reloads := 0
	v.SetReload(func() error {
		reloads++
		return v.SetIssuers(trusted)
	})
	// The store learns the new key; the verifier has not been told.
	trusted = issuerRecords(t, []*demo.Issuer{old, fresh}, issA)
	if _, err := v.Verify(mint(t, fresh, goodClaims(fresh), nil)); err != nil {
		t.Fatalf("a token of the key the store just got: %v", err)
	}
	if reloads != 1 {
		t.Fatalf("%d reloads, want 1", reloads)
	}
	stranger := newIssuer(t, issA, "nobody-1")
	for range 5 {
		_, err := v.Verify(mint(t, stranger, goodClaims(stranger), nil))
		wantReason(t, err, authn.ReasonUnknownKey)
	}
	if reloads > 2 {
		t.Fatalf("%d reloads for 5 tokens of an unknown kid within a second, want at most one more", reloads)
	}
}
