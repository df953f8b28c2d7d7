package authn_test

import (
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// BenchmarkVerify measures token verification alone: "fresh" checks an ES256
// signature and every claim, "cached" finds an already-verified token by its
// SHA-256 and re-checks only its times.
//
//	go test -run '^$' -bench BenchmarkVerify -benchmem ./edge/authn/
func BenchmarkVerify(b *testing.B) {
	iss, v := benchVerifier(b)
	b.Run("fresh", func(b *testing.B) {
		benchFresh(b, v, func() string { return mint(b, iss, benchClaims(iss), nil) })
	})
	b.Run("cached", func(b *testing.B) {
		tok := mint(b, iss, benchClaims(iss), nil)
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyCWT is BenchmarkVerify's "fresh" case for a CWT: an ES256
// COSE_Sign1 checked with every claim.
//
//	go test -run '^$' -bench BenchmarkVerifyCWT -benchmem ./edge/authn/
func BenchmarkVerifyCWT(b *testing.B) {
	iss, v := benchVerifier(b)
	benchFresh(b, v, func() string { return mintCWT(b, iss, benchClaims(iss)) })
}

// benchVerifier is an issuer and a verifier with a large cache trusting it.
func benchVerifier(b *testing.B) (*demo.Issuer, *authn.Verifier) {
	iss := newIssuer(b, "https://issuer.test", "k1")
	v := authn.NewVerifier(authn.VerifierConfig{Audiences: []string{"edgeid"}, Skew: time.Second,
		MaxLifetime: 24 * time.Hour, MaxSize: 8192, CacheSize: 1 << 20})
	if err := v.SetIssuers([]store.Issuer{record(b, iss)}); err != nil {
		b.Fatal(err)
	}
	return iss, v
}

// benchClaims are the claims of a benchmark's tokens.
func benchClaims(iss *demo.Issuer) map[string]any {
	return iss.Claims("thermo-1", "alice", "edgeid", "publish:devices/thermo-1/telemetry/# subscribe:devices/thermo-1/commands/#", time.Hour)
}

// benchFresh verifies b.N tokens made by newToken, each once.
func benchFresh(b *testing.B, v *authn.Verifier, newToken func() string) {
	toks := make([]string, b.N)
	for i := range toks {
		toks[i] = newToken()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(toks[i]); err != nil {
			b.Fatal(err)
		}
	}
}
