package authn_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
)

// TestTokenBoundCertificateValidity: a token bound to a certificate (cnf
// x5t#S256) is proven by that certificate, so it is refused outside the
// certificate's validity, and its session ends at the earlier of exp (plus
// ExpLeeway) and the certificate's NotAfter: it used to run on to exp.
func TestTokenBoundCertificateValidity(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	leaf := func(cn string, from, to time.Time) *x509.Certificate {
		return newLeaf(t, cn, 42, from, to, x509.ExtKeyUsageClientAuth, nil)
	}
	shortLived := leaf("d1", now.Add(-time.Hour), now.Add(10*time.Minute))
	longLived := leaf("d1", now.Add(-time.Hour), now.Add(48*time.Hour))
	expired := leaf("d1", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	future := leaf("d1", now.Add(time.Hour), now.Add(48*time.Hour))
	bound := func(c *x509.Certificate) string {
		return f.token(t, "d1", "d1", "cnf", map[string]any{"x5t#S256": x5t(c)})
	}

	t.Run("session ends at the certificate's NotAfter", func(t *testing.T) {
		p, err := f.auth.Token(bound(shortLived), authn.Possession{Cert: shortLived}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if !p.Expires.Equal(shortLived.NotAfter) || !p.Expires.Before(p.Claims.Expiry) {
			t.Errorf("End = %s, want the certificate's NotAfter %s (exp is %s)", p.Expires, shortLived.NotAfter, p.Claims.Expiry)
		}
	})
	t.Run("session ends at exp when the certificate outlives it", func(t *testing.T) {
		f.auth.ExpLeeway = 5 * time.Second
		defer func() { f.auth.ExpLeeway = 0 }()
		p, err := f.auth.Token(bound(longLived), authn.Possession{Cert: longLived}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		if want := p.Claims.Expiry.Add(5 * time.Second); !p.Expires.Equal(want) {
			t.Errorf("End = %s, want exp + ExpLeeway %s", p.Expires, want)
		}
	})
	for _, tt := range []struct {
		name   string
		cert   *x509.Certificate
		want   authn.Reason
		detail string
	}{
		{"expired certificate", expired, authn.ReasonExpired, "the client certificate the token is bound to (cnf x5t#S256) expired at"},
		{"certificate not valid yet", future, authn.ReasonNotYetValid, "the client certificate the token is bound to (cnf x5t#S256) is not valid before"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := bound(tt.cert)
			p, err := f.auth.Token(tok, authn.Possession{Cert: tt.cert}, "d1")
			if p != nil {
				t.Fatalf("accepted: End %s", p.Expires)
			}
			wantReason(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.detail) || strings.Contains(err.Error(), tok) {
				t.Errorf("refusal %q does not say %q, or repeats the token", err, tt.detail)
			}
			if !tt.want.BadCredentials() {
				t.Errorf("%s is not a bad-credentials reason (0x86)", tt.want)
			}
		})
	}
	t.Run("the authenticator's clock decides", func(t *testing.T) {
		tok := bound(shortLived)
		f.auth.Now = func() time.Time { return shortLived.NotAfter.Add(time.Second) }
		defer func() { f.auth.Now = nil }()
		_, err := f.auth.Token(tok, authn.Possession{Cert: shortLived}, "d1")
		wantReason(t, err, authn.ReasonExpired)
		f.auth.Now = func() time.Time { return shortLived.NotAfter.Add(-time.Second) }
		if _, err := f.auth.Token(tok, authn.Possession{Cert: shortLived}, "d1"); err != nil {
			t.Errorf("a second before NotAfter: %v", err)
		}
	})
	t.Run("CredentialEnd", func(t *testing.T) {
		c := &authn.Claims{Expiry: now.Add(time.Hour)}
		for _, tt := range []struct {
			name string
			c    *authn.Claims
			cert *x509.Certificate
			want time.Time
		}{
			{"token only", c, nil, c.Expiry},
			{"certificate only", nil, shortLived, shortLived.NotAfter},
			{"certificate first", c, shortLived, shortLived.NotAfter},
			{"exp first", c, longLived, c.Expiry},
			{"neither", nil, nil, time.Time{}},
		} {
			if got := f.auth.CredentialEnd(tt.c, tt.cert); !got.Equal(tt.want) {
				t.Errorf("%s: CredentialEnd = %s, want %s", tt.name, got, tt.want)
			}
		}
	})
}
