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
	iss, err := demo.NewIssuer("https://issuer.test", "k1")
	if err != nil {
		b.Fatal(err)
	}
	rec, _ := iss.Record()
	v := authn.NewVerifier(authn.VerifierConfig{Audiences: []string{"edgeid"}, Skew: time.Second,
		MaxLifetime: 24 * time.Hour, MaxSize: 8192, CacheSize: 1 << 20})
	if err := v.SetIssuers([]store.Issuer{rec}); err != nil {
		b.Fatal(err)
	}
	mint := func() string {
		tok, err := iss.Mint(iss.Claims("thermo-1", "alice", "edgeid", "publish:devices/thermo-1/telemetry/# subscribe:devices/thermo-1/commands/#", time.Hour), nil)
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	b.Run("fresh", func(b *testing.B) {
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = mint()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := v.Verify(toks[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok := mint()
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
