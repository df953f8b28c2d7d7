package authn_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

func TestVerifyRefusesBadTokens(t *testing.T) {
	a, v := refusalVerifier(t)
	good := goodClaims(a)
	goodTok := mint(t, a, good, nil)
	if _, err := v.Verify(goodTok); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
	parts := strings.Split(goodTok, ".")
	now := time.Now()

	// alg none, crafted by hand.
	algNone := b64json(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": "a1"}) + "." + parts[1] + "."

	// HS256 with the issuer's public key as the HMAC secret: the key confusion attack.
	rec := record(t, a)
	der, err := x509.MarshalPKIXPublicKey(&ecPrivOf(t, a).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hsHeader := b64json(t, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": "a1"})
	hs := func(secret []byte) string {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(hsHeader + "." + parts[1]))
		return hsHeader + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}

	// The payload changed after signing.
	var payload map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	payload["sub"] = "d2"
	payload["client_id"] = "d2"
	tampered := parts[0] + "." + b64json(t, payload) + "." + parts[2]

	imposter, es384 := impostors(t)
	big := strings.Repeat("x", 9000)

	runVerifyCases(t, v, []verifyCase{
		{"alg none", algNone, authn.ReasonBadHeader},
		{"alg none with a signature", algNone + "c2ln", authn.ReasonBadHeader},
		{"HS256 with the public key DER as secret", hs(der), authn.ReasonBadHeader},
		{"HS256 with the public key PEM as secret", hs(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), authn.ReasonBadHeader},
		{"HS256 with the JWKS as secret", hs(rec.JWKS), authn.ReasonBadHeader},
		{"header alg not the key's alg", mint(t, es384, good, nil), authn.ReasonBadHeader},
		{"unknown kid", mint(t, newIssuer(t, issA, "zz"), good, nil), authn.ReasonUnknownKey},
		{"hand-signed control", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "a1"}, good), ""},
		{"empty kid", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": ""}, good), authn.ReasonBadHeader},
		{"no kid", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt"}, good), authn.ReasonBadHeader},
		{"no alg", signES256(t, a, map[string]any{"typ": "at+jwt", "kid": "a1"}, good), authn.ReasonBadHeader},
		{"tampered payload", tampered, authn.ReasonBadSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(mint(t, a, good, nil), ".")[2][:10] + parts[2][10:], authn.ReasonBadSignature},
		{"other key with the same kid", mint(t, imposter, good, nil), authn.ReasonBadSignature},
		{"expired", mint(t, a, with(good, "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix()), nil), authn.ReasonExpired},
		{"nbf in the future", mint(t, a, with(good, "nbf", now.Add(10*time.Minute).Unix()), nil), authn.ReasonNotYetValid},
		{"iat in the future", mint(t, a, with(good, "iat", now.Add(10*time.Minute).Unix(), "exp", now.Add(time.Hour).Unix()), nil), authn.ReasonNotYetValid},
		{"iss of another trusted issuer", mint(t, a, with(good, "iss", issB), nil), authn.ReasonWrongIssuer},
		{"iss untrusted", mint(t, a, with(good, "iss", "https://evil.example/"), nil), authn.ReasonWrongIssuer},
		{"iss missing", mint(t, a, without(good, "iss"), nil), authn.ReasonWrongIssuer},
		{"wrong aud", mint(t, a, with(good, "aud", "someone-else"), nil), authn.ReasonWrongAudience},
		{"wrong aud list", mint(t, a, with(good, "aud", []string{"x", "y"}), nil), authn.ReasonWrongAudience},
		{"aud missing", mint(t, a, without(good, "aud"), nil), authn.ReasonWrongAudience},
		{"sub missing", mint(t, a, without(good, "sub"), nil), authn.ReasonBadClaims},
		{"jti missing", mint(t, a, without(good, "jti"), nil), authn.ReasonBadClaims},
		{"exp missing", mint(t, a, without(good, "exp"), nil), authn.ReasonBadClaims},
		{"iat missing", mint(t, a, without(good, "iat"), nil), authn.ReasonBadClaims},
		{"client_id missing", mint(t, a, without(good, "client_id"), nil), authn.ReasonBadClaims},
		{"client_id empty", mint(t, a, with(good, "client_id", ""), nil), authn.ReasonBadClaims},
		{"lifetime too long", mint(t, a, with(good, "exp", now.Add(25*time.Hour).Unix()), nil), authn.ReasonBadClaims},
		{"oversized", mint(t, a, with(good, "pad", big), nil), authn.ReasonOversized},
		{"oversized garbage", big, authn.ReasonOversized},
		{"typ JWT", mint(t, a, good, map[string]any{"typ": "JWT"}), authn.ReasonBadHeader},
		{"typ missing", signES256(t, a, map[string]any{"alg": "ES256", "kid": "a1"}, good), authn.ReasonBadHeader},
		{"typ JWT hand-signed", signES256(t, a, map[string]any{"alg": "ES256", "typ": "JWT", "kid": "a1"}, good), authn.ReasonBadHeader},
		{"crit hand-signed", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "a1", "crit": []string{"x-ext"}, "x-ext": 1}, good), authn.ReasonBadHeader},
		{"crit header", mint(t, a, good, map[string]any{"crit": []string{"exp"}}), authn.ReasonBadHeader},
		{"crit empty", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "a1", "crit": []string{}}, good), authn.ReasonBadHeader},
		{"b64 false without crit", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "a1", "b64": false}, good), authn.ReasonBadHeader},
		{"b64 true", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "a1", "b64": true}, good), ""},
		{"alg not a string", signES256(t, a, map[string]any{"alg": 7, "typ": "at+jwt", "kid": "a1"}, good), authn.ReasonBadHeader},
		{"kid not a string", signES256(t, a, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": 1}, good), authn.ReasonBadHeader},
		{"aud not a string", mint(t, a, with(good, "aud", 5), nil), authn.ReasonBadClaims},
		{"aud list with a number", mint(t, a, with(good, "aud", []any{"edgeid", 5}), nil), authn.ReasonBadClaims},
		{"exp with a fraction", mint(t, a, with(good, "exp", float64(now.Add(time.Hour).Unix())+0.5), nil), ""},
		{"bad scope filter", mint(t, a, with(good, "scope", "publish:a/#/b"), nil), authn.ReasonBadClaims},
		{"scope not a string", mint(t, a, with(good, "scope", 42), nil), authn.ReasonBadClaims},
		{"cnf empty", mint(t, a, with(good, "cnf", map[string]any{}), nil), authn.ReasonBadClaims},
		{"cnf with an unsupported member only", mint(t, a, with(good, "cnf", map[string]any{"jwk": map[string]any{"kty": "EC"}}), nil), authn.ReasonBadClaims},
		{"empty string", "", authn.ReasonMalformed},
		{"no dots", "garbage", authn.ReasonMalformed},
		{"one dot", "a.b", authn.ReasonMalformed},
		{"three dots", goodTok + ".x", authn.ReasonMalformed},
		{"only dots", "..", authn.ReasonMalformed},
		{"not base64", "!!!.???.***", authn.ReasonMalformed},
		{"header not JSON", base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2], authn.ReasonMalformed},
		{"JSON serialization", `{"payload":"` + parts[1] + `","signatures":[]}`, authn.ReasonMalformed},
	})

	// Missing claims are named.
	_, err = v.Verify(mint(t, a, without(good, "jti", "client_id"), nil))
	wantReason(t, err, authn.ReasonBadClaims)
	if !strings.Contains(err.Error(), "client_id, jti") {
		t.Errorf("error %q does not name the missing claims", err)
	}
}

func TestVerifyClaimTypesAreBadClaims(t *testing.T) {
	// A token signed by a trusted key whose claims have the wrong JSON types
	// is a bad-claims token, not a bad signature.
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	good := goodClaims(a)
	for name, c := range map[string]map[string]any{
		"cnf not an object": with(good, "cnf", "abc"),
		"exp not a number":  with(good, "exp", "tomorrow"),
		"sub not a string":  with(good, "sub", 7),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(mint(t, a, c, nil))
			if err == nil {
				t.Fatal("accepted")
			}
			if r := authn.ReasonOf(err); r != authn.ReasonBadClaims {
				t.Errorf("reason = %q (%v), want %q: the signature is good", r, err, authn.ReasonBadClaims)
			}
		})
	}
}

func TestVerifyGoodTokens(t *testing.T) {
	edPriv := newEd25519(t)
	issuers := []*demo.Issuer{
		newIssuer(t, issA, "es256"),
		issuerFromKey(t, issA, "ed", jwa.EdDSA(), edPriv),
		issuerFromKey(t, issA, "ed2", jwa.EdDSAEd25519(), edPriv),
		issuerFromKey(t, issB, "rs", jwa.RS256(), rsa2048(t)),
		issuerFromKey(t, issB, "ps", jwa.PS256(), rsa2048(t)),
		issuerFromKey(t, issB, "es384", jwa.ES384(), newP384(t)),
	}
	v := trustAll(t, issuers)

	for _, is := range issuers {
		t.Run(is.Alg.String(), func(t *testing.T) {
			now := time.Now().Truncate(time.Second)
			claims := map[string]any{
				"iss": is.URL, "sub": "alice", "aud": []string{"x", aud}, "client_id": "d1", "jti": "jti-" + is.Kid,
				"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
				"scope":  "openid publish:devices/d1/telemetry/# subscribe:devices/d1/commands/+ publish:devices/d1/status subscribe:devices/d1/status",
				"cnf":    map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
				"extra":  map[string]any{"nested": true},
				"groups": []string{"g"},
			}
			tok := mint(t, is, claims, nil)
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Issuer != is.URL || c.Kid != is.Kid || c.Subject != "alice" || c.ClientID != "d1" || c.JTI != "jti-"+is.Kid {
				t.Errorf("claims = iss %q kid %q sub %q client_id %q jti %q", c.Issuer, c.Kid, c.Subject, c.ClientID, c.JTI)
			}
			if !slices.Equal(c.Audience, []string{"x", aud}) {
				t.Errorf("aud = %q", c.Audience)
			}
			if !c.IssuedAt.Equal(now) || !c.NotBefore.Equal(now.Add(-time.Minute)) || !c.Expiry.Equal(now.Add(time.Hour)) {
				t.Errorf("times iat %s nbf %s exp %s; want %s, %s, %s", c.IssuedAt, c.NotBefore, c.Expiry, now, now.Add(-time.Minute), now.Add(time.Hour))
			}
			if c.Cnf.JKT != "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" || c.Cnf.X5T != "" || !c.Cnf.Bound() {
				t.Errorf("cnf = %+v", c.Cnf)
			}
			wantPublish(t, "Scope", c.Scope, map[string]bool{
				"devices/d1/telemetry/temp": true, "devices/d1/telemetry": true, "devices/d1/status": true,
				"devices/d2/telemetry/temp": false, "devices/d1/commands/reboot": false, "openid": false,
			})
			wantSubscribe(t, "Scope", c.Scope, map[string]bool{
				"devices/d1/commands/+": true, "devices/d1/commands/reboot": true, "devices/d1/status": true,
				"devices/d1/commands/#": false, "devices/d1/telemetry/#": false,
			})
			if !v.HasKey(is.URL, is.Kid) {
				t.Errorf("HasKey(%s, %s) = false", is.URL, is.Kid)
			}
		})
	}
	if v.HasKey(issA, "rs") {
		t.Error("HasKey(issA, rs) = true, but rs is a key of issB")
	}

	// No scope claim: the token grants nothing, and is still valid.
	a := issuers[0]
	c, err := v.Verify(mint(t, a, without(goodClaims(a), "scope"), nil))
	if err != nil {
		t.Fatalf("token without scope: %v", err)
	}
	if c.Scope == nil || c.Scope.CanPublish("devices/d1/telemetry") || c.Cnf.Bound() || !c.NotBefore.IsZero() {
		t.Errorf("token without scope/cnf/nbf: scope %v cnf %+v nbf %s", c.Scope, c.Cnf, c.NotBefore)
	}
	// application/at+jwt is the long form of the same typ.
	if _, err := v.Verify(mint(t, a, goodClaims(a), map[string]any{"typ": "application/at+jwt"})); err != nil {
		t.Errorf("typ application/at+jwt refused: %v", err)
	}
	// A token at exactly MaxLifetime is fine.
	now := time.Now()
	if _, err := v.Verify(mint(t, a, with(goodClaims(a), "iat", now.Unix(), "exp", now.Add(24*time.Hour).Unix()), nil)); err != nil {
		t.Errorf("token living exactly max lifetime refused: %v", err)
	}
	// cnf x5t#S256 is parsed.
	c, err = v.Verify(mint(t, a, with(goodClaims(a), "cnf", map[string]any{"x5t#S256": "abc"}), nil))
	if err != nil || c.Cnf.X5T != "abc" || c.Cnf.JKT != "" {
		t.Errorf("cnf x5t#S256: %+v, %v", c, err)
	}
}

func TestVerifyMaxSizeBoundary(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	tok := mint(t, a, goodClaims(a), nil)
	cfg := defaultConfig()
	cfg.MaxSize = len(tok)
	if _, err := newVerifier(t, cfg, a).Verify(tok); err != nil {
		t.Errorf("token of exactly max size refused: %v", err)
	}
	cfg.MaxSize = len(tok) - 1
	_, err := newVerifier(t, cfg, a).Verify(tok)
	wantReason(t, err, authn.ReasonOversized)
}

func TestSharedKid(t *testing.T) {
	// Two issuers use the same kid with different keys: each token verifies
	// with its own issuer's key, and iss must be that issuer.
	a := newIssuer(t, issA, "k")
	b := newIssuer(t, issB, "k")
	v := newVerifier(t, defaultConfig(), a, b)
	for _, is := range []*demo.Issuer{a, b} {
		c, err := v.Verify(mint(t, is, goodClaims(is), nil))
		if err != nil || c.Issuer != is.URL {
			t.Errorf("token of %s: %+v, %v", is.URL, c, err)
		}
	}
	_, err := v.Verify(mint(t, a, with(goodClaims(a), "iss", issB), nil))
	wantReason(t, err, authn.ReasonWrongIssuer)
	_, err = v.Verify(mint(t, newIssuer(t, issA, "k"), goodClaims(a), nil))
	wantReason(t, err, authn.ReasonBadSignature)
}

func TestSharedKidMixedAlgBadSignature(t *testing.T) {
	// issA signs with RS256 and issB with ES256, both under kid "k". A token
	// claiming ES256 whose signature fails is a bad signature: one trusted
	// key has the header's alg.
	a := issuerFromKey(t, issA, "k", jwa.RS256(), rsa2048(t))
	b := newIssuer(t, issB, "k")
	v := newVerifier(t, defaultConfig(), a, b)
	if _, err := v.Verify(mint(t, b, goodClaims(b), nil)); err != nil {
		t.Fatalf("good ES256 token refused: %v", err)
	}
	if _, err := v.Verify(mint(t, a, goodClaims(a), nil)); err != nil {
		t.Fatalf("good RS256 token refused: %v", err)
	}
	_, err := v.Verify(mint(t, newIssuer(t, issB, "k"), goodClaims(b), nil))
	wantReason(t, err, authn.ReasonBadSignature)
}

func TestSetIssuers(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	tok := mint(t, a, goodClaims(a), nil)
	mustVerify(t, v, tok)
	// A bad set is refused whole and the old keys stay.
	bad := store.Issuer{Issuer: issB, JWKS: store.JWKS(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}`)}
	if err := v.SetIssuers([]store.Issuer{record(t, newIssuer(t, "https://c/", "c1")), bad}); err == nil || !strings.Contains(err.Error(), issB) {
		t.Fatalf("SetIssuers with an HMAC key: %v, want an error naming %s", err, issB)
	}
	if v.CacheLen() != 1 || !v.HasKey(issA, "a1") || v.HasKey("https://c/", "c1") {
		t.Errorf("after a refused SetIssuers: cache %d, HasKey(a1) %v, HasKey(c1) %v; want 1, true, false", v.CacheLen(), v.HasKey(issA, "a1"), v.HasKey("https://c/", "c1"))
	}
	// Removing the issuer stops its tokens at once, cached or not.
	if err := v.SetIssuers(nil); err != nil {
		t.Fatal(err)
	}
	if v.CacheLen() != 0 {
		t.Errorf("CacheLen after SetIssuers = %d, want 0", v.CacheLen())
	}
	_, err := v.Verify(tok)
	wantReason(t, err, authn.ReasonUnknownKey)
	if v.HasKey(issA, "a1") {
		t.Error("HasKey after removal = true")
	}
}

// SetIssuers promises that a removed key stops working at once. A Verify
// that was checking a signature with the old keys while SetIssuers ran must
// not leave the token in the cache, where it would be accepted afterwards.
func TestSetIssuersRemovesKeyDuringVerify(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	var toks []string
	for range 32 {
		toks = append(toks, mint(t, a, goodClaims(a), nil))
	}
	for trial := range 40 {
		v := newVerifier(t, defaultConfig(), a)
		started := make(chan struct{})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				_, _ = v.Verify(toks[i%len(toks)])
				if i == 0 {
					close(started)
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		<-started
		if err := v.SetIssuers(nil); err != nil {
			t.Fatal(err)
		}
		close(stop)
		<-done
		for i, tok := range toks {
			if _, err := v.Verify(tok); err == nil {
				t.Fatalf("trial %d: token %d of a removed issuer accepted after SetIssuers returned (cache len %d)", trial, i, v.CacheLen())
			}
		}
	}
}

func TestVerifierCache(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	now := time.Now()
	clock := now
	cfg := defaultConfig()
	cfg.Now = func() time.Time { return clock }
	v := newVerifier(t, cfg, a)

	claims := with(goodClaims(a), "iat", now.Unix(), "exp", now.Add(time.Minute).Unix())
	tok := mint(t, a, claims, nil)
	c1 := mustVerify(t, v, tok)
	c2 := mustVerify(t, v, tok)
	if v.CacheLen() != 1 {
		t.Errorf("CacheLen after verifying one token twice = %d, want 1", v.CacheLen())
	}
	if c1 != c2 {
		t.Error("second Verify did not return the cached claims")
	}
	// Refused tokens are not cached.
	if _, err := v.Verify(mint(t, a, with(claims, "aud", "x"), nil)); err == nil {
		t.Fatal("wrong aud accepted")
	}
	if v.CacheLen() != 1 {
		t.Errorf("CacheLen after a refused token = %d, want 1", v.CacheLen())
	}

	// Forget drops what the predicate matches, and only that.
	if n := v.Forget(func(c *authn.Claims) bool { return c.ClientID == "other" }); n != 0 || v.CacheLen() != 1 {
		t.Errorf("Forget(no match) = %d, CacheLen %d; want 0, 1", n, v.CacheLen())
	}
	if n := v.Forget(func(c *authn.Claims) bool { return c.ClientID == "d1" }); n != 1 || v.CacheLen() != 0 {
		t.Errorf("Forget(client d1) = %d, CacheLen %d; want 1, 0", n, v.CacheLen())
	}
	c3, err := v.Verify(tok)
	if err != nil || c3 == c1 {
		t.Errorf("Verify after Forget: %v, same claims %v; want freshly verified claims", err, c3 == c1)
	}

	// Purge forgets everything.
	v.Purge()
	if v.CacheLen() != 0 {
		t.Errorf("CacheLen after Purge = %d", v.CacheLen())
	}
	mustVerify(t, v, tok)

	// A cached token that has expired is refused.
	clock = now.Add(2 * time.Minute)
	_, err = v.Verify(tok)
	wantReason(t, err, authn.ReasonExpired)
	clock = now.Add(time.Minute) // exp itself is already too late
	_, err = v.Verify(tok)
	wantReason(t, err, authn.ReasonExpired)

	// SetIssuers purges.
	clock = now
	mustVerify(t, v, tok)
	if err := v.SetIssuers([]store.Issuer{record(t, a)}); err != nil {
		t.Fatal(err)
	}
	if v.CacheLen() != 0 {
		t.Errorf("CacheLen after SetIssuers = %d, want 0", v.CacheLen())
	}
}

func TestVerifierWithoutCache(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, cacheConfig(0), a)
	tok := mint(t, a, goodClaims(a), nil)
	for range 2 {
		mustVerify(t, v, tok)
	}
	if v.CacheLen() != 0 || v.Forget(func(*authn.Claims) bool { return true }) != 0 {
		t.Error("a verifier without cache reports cached tokens")
	}
	v.Purge() // must not panic
}

// TestVerifierSkew: auth.clock_skew applies to nbf and iat only; exp has its
// own leeway (auth.exp_leeway, default 0), so a token is refused at its exp
// whatever the skew.
func TestVerifierSkew(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	now := time.Now()
	expiredBy := func(d time.Duration) map[string]any {
		return with(goodClaims(a), "iat", now.Add(-time.Hour).Unix(), "exp", now.Add(-d).Unix())
	}
	tests := []struct {
		name         string
		claims       map[string]any
		skew, leeway time.Duration
		want         authn.Reason // "" = accepted
	}{
		{"expired 10s ago, skew 30s", expiredBy(10 * time.Second), 30 * time.Second, 0, authn.ReasonExpired},
		{"expiring now, skew 30s", expiredBy(0), 30 * time.Second, 0, authn.ReasonExpired},
		{"expired 10s ago, skew 0", expiredBy(10 * time.Second), 0, 0, authn.ReasonExpired},
		{"expired 10s ago, leeway 30s", expiredBy(10 * time.Second), 0, 30 * time.Second, ""},
		{"expired 40s ago, leeway 30s", expiredBy(40 * time.Second), 0, 30 * time.Second, authn.ReasonExpired},
		{"expired 10s ago, leeway 5s, skew 30s", expiredBy(10 * time.Second), 30 * time.Second, 5 * time.Second, authn.ReasonExpired},
		{"nbf in 10s, skew 30s", with(goodClaims(a), "nbf", now.Add(10*time.Second).Unix()), 30 * time.Second, 0, ""},
		{"nbf in 10s, skew 0", with(goodClaims(a), "nbf", now.Add(10*time.Second).Unix()), 0, 0, authn.ReasonNotYetValid},
		{"nbf in 10s, skew 0, leeway 30s", with(goodClaims(a), "nbf", now.Add(10*time.Second).Unix()), 0, 30 * time.Second, authn.ReasonNotYetValid},
		{"iat in 10s, skew 30s", with(goodClaims(a), "iat", now.Add(10*time.Second).Unix()), 30 * time.Second, 0, ""},
		{"iat in 10s, skew 0", with(goodClaims(a), "iat", now.Add(10*time.Second).Unix()), 0, 0, authn.ReasonNotYetValid},
		{"iat in 10s, skew 0, leeway 30s", with(goodClaims(a), "iat", now.Add(10*time.Second).Unix()), 0, 30 * time.Second, authn.ReasonNotYetValid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Skew, cfg.ExpLeeway = tt.skew, tt.leeway
			cfg.Now = func() time.Time { return now }
			verifyWant(t, newVerifier(t, cfg, a), mint(t, a, tt.claims, nil), tt.want)
		})
	}
}

func TestReasonOf(t *testing.T) {
	if r := authn.ReasonOf(&authn.Error{Reason: authn.ReasonRevoked}); r != authn.ReasonRevoked {
		t.Errorf("ReasonOf(Error{revoked}) = %q", r)
	}
	if r := authn.ReasonOf(errors.New("disk")); r != authn.ReasonStore {
		t.Errorf("ReasonOf(plain error) = %q, want %q", r, authn.ReasonStore)
	}
	for _, r := range []authn.Reason{authn.ReasonBadSignature, authn.ReasonExpired, authn.ReasonUnknownCert, authn.ReasonMalformed} {
		if !r.BadCredentials() {
			t.Errorf("%q.BadCredentials() = false", r)
		}
	}
	for _, r := range []authn.Reason{authn.ReasonRevoked, authn.ReasonDeviceInactive, authn.ReasonStore, authn.ReasonSubject} {
		if r.BadCredentials() {
			t.Errorf("%q.BadCredentials() = true", r)
		}
	}
}

func TestClaimsJSONHasNoToken(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	tok := mint(t, a, goodClaims(a), nil)
	raw, err := json.Marshal(mustVerify(t, v, tok))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m["client_id"] != "d1" || m["iss"] != issA || strings.Contains(string(raw), strings.Split(tok, ".")[2]) {
		t.Errorf("Claims JSON = %s", raw)
	}
}

// refusalVerifier is issuer a (issA, kid a1) and a verifier without cache
// that trusts it and issuer b1 of issB: for the tables of refused tokens.
func refusalVerifier(t *testing.T) (*demo.Issuer, *authn.Verifier) {
	t.Helper()
	a := newIssuer(t, issA, "a1")
	return a, newVerifier(t, cacheConfig(0), a, newIssuer(t, issB, "b1"))
}
