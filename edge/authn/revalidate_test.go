package authn_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/store"
)

// TestRevalidateRevokedTokenSession: a live token session re-checked after
// a store change (Revalidate) ends when a revocation covers its token: by
// jti, or by device or subject for a token issued at or before revoked_at.
// A certificate session (no claims) is not decided by revocations here:
// the gateway ends it on a device revocation, and its device's status
// decides new connects.
func TestRevalidateRevokedTokenSession(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	iat := now.Add(-time.Hour).Truncate(time.Second)
	session := func(sub string) *authn.Claims {
		t.Helper()
		p, err := f.auth.Token(f.token(t, "d1", sub, "iat", iat.Unix(), "exp", now.Add(time.Hour).Unix(), "jti", "j-"+sub), authn.Possession{}, "d1")
		if err != nil {
			t.Fatal(err)
		}
		return p.Claims
	}
	own, owners := session("d1"), session("alice")
	cert, err := f.auth.Certificate([]*x509.Certificate{f.certA}, "d3")
	if err != nil {
		t.Fatal(err)
	}
	revalidate := func(device string, c *authn.Claims) error {
		_, _, err := f.auth.Revalidate(device, c, device)
		return err
	}
	for _, c := range []*authn.Claims{own, owners} {
		if err := revalidate("d1", c); err != nil {
			t.Fatalf("before any revocation: %v", err)
		}
	}

	tests := []struct {
		name       string
		r          store.Revocation
		own, owner authn.Reason // "" = the session goes on
	}{
		{"device, revoked after iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: now}, authn.ReasonRevoked, authn.ReasonRevoked},
		{"device, revoked at iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat}, authn.ReasonRevoked, authn.ReasonRevoked},
		{"device, revoked before iat", store.Revocation{Kind: store.RevokeDevice, Value: "d1", RevokedAt: iat.Add(-time.Second)}, "", ""},
		{"another device", store.Revocation{Kind: store.RevokeDevice, Value: "d11", RevokedAt: now}, "", ""},
		{"subject alice", store.Revocation{Kind: store.RevokeSubject, Value: "alice", RevokedAt: now}, "", authn.ReasonRevoked},
		{"subject d1", store.Revocation{Kind: store.RevokeSubject, Value: "d1", RevokedAt: now}, authn.ReasonRevoked, ""},
		{"jti of the device's own token", store.Revocation{Kind: store.RevokeToken, Value: "j-d1", RevokedAt: now}, authn.ReasonRevoked, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.ExpiresAt = now.Add(3 * time.Hour)
			f.apply(t, &store.Batch{Revocations: []store.Revocation{tt.r}})
			defer f.apply(t, &store.Batch{Delete: store.Deletions{Revocations: []string{string(tt.r.Kind) + "/" + tt.r.Value}}})
			for _, s := range []struct {
				c    *authn.Claims
				want authn.Reason
			}{{own, tt.own}, {owners, tt.owner}} {
				err := revalidate("d1", s.c)
				if s.want == "" {
					if err != nil {
						t.Errorf("session of sub %s ended: %v", s.c.Subject, err)
					}
					continue
				}
				wantReason(t, err, s.want)
			}
			// A certificate session carries no token: revocations are not
			// Revalidate's to apply to it.
			if _, _, err := f.auth.Revalidate("d3", nil, "d3"); err != nil {
				t.Errorf("certificate session of d3: %v", err)
			}
		})
	}
	if cert.Device.ID != "d3" {
		t.Fatalf("certificate session is for %s", cert.Device.ID)
	}
	// After every revocation was lifted, both token sessions go on.
	for _, c := range []*authn.Claims{own, owners} {
		if err := revalidate("d1", c); err != nil {
			t.Errorf("after the revocations were lifted: %v", err)
		}
	}
}
