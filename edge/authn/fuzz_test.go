package authn_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/authn"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, and
// every refusal must be an *authn.Error with a reason (so that the broker can
// choose a reason code) whose text does not repeat the credential.
func FuzzVerify(f *testing.F) {
	a := newIssuer(f, issA, "a1")
	cfg := defaultConfig()
	cfg.CacheSize = 8
	v := newVerifier(f, cfg, a)

	good := mint(f, a, goodClaims(a), nil)
	parts := strings.Split(good, ".")
	f.Add(good)
	for _, n := range []int{0, 1, 10, len(parts[0]), len(parts[0]) + 1, len(parts[0]) + len(parts[1]) + 1, len(parts[0]) + len(parts[1]) + 2, len(good) - 1} {
		f.Add(good[:n])
	}
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add(b64([]byte(`{"alg":"none","typ":"at+jwt","kid":"a1"}`)) + "." + parts[1] + ".")
	f.Add(b64([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"a1"}`)) + "." + parts[1] + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"ES256","typ":"at+jwt","kid":"a1","crit":["b64"],"b64":false}`)) + "." + parts[1] + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"ES256","typ":"at+jwt","kid":"a1"}`)) + "." + b64([]byte(`{"exp":"x","aud":7}`)) + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"ES256","typ":"at+jwt","kid":["a1"]}`)) + "." + parts[1] + "." + parts[2])
	f.Add(b64([]byte(`null`)) + "." + b64([]byte(`null`)) + ".")
	for _, s := range []string{"", ".", "..", "...", "a.b.c", ".b.c", "a..c", "a.b.", "=.=.=", "eyJ.eyJ.", "\x00.\xff.\n", parts[0] + ".." + parts[2]} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err == nil {
			if c == nil || c.Issuer != issA || c.ClientID == "" || c.Subject == "" || c.JTI == "" || c.Scope == nil {
				t.Fatalf("Verify(%q) accepted with claims %+v", token, c)
			}
			return
		}
		if c != nil {
			t.Fatalf("Verify(%q) returned claims with error %v", token, err)
		}
		var ae *authn.Error
		if !errors.As(err, &ae) {
			t.Fatalf("Verify(%q) error %T %v is not an *authn.Error", token, err, err)
		}
		if ae.Reason == "" || authn.ReasonOf(err) != ae.Reason {
			t.Fatalf("Verify(%q) error %v has no reason", token, err)
		}
		if !ae.Reason.BadCredentials() {
			t.Fatalf("Verify(%q) reason %q is not about the credential", token, ae.Reason)
		}
		if len(token) >= 24 && strings.Contains(err.Error(), token) {
			t.Fatalf("error text %q repeats the token", err)
		}
	})
}
