package authn_test

// Shared helpers of the package's black-box tests.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

const (
	issA = "https://a.example.com/"
	issB = "https://b.example.com/"
	aud  = "edgeid"
)

// ---- issuers and keys ----

func newIssuer(t testing.TB, url, kid string) *demo.Issuer {
	t.Helper()
	is, err := demo.NewIssuer(url, kid)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// issuerRecords makes one issuer record per URL, holding the keys of every
// issuer with that URL.
func issuerRecords(t testing.TB, issuers []*demo.Issuer, urls ...string) []store.Issuer {
	t.Helper()
	var recs []store.Issuer
	for _, url := range urls {
		var keys []json.RawMessage
		for _, is := range issuers {
			if is.URL != url {
				continue
			}
			j, err := is.JWKS()
			if err != nil {
				t.Fatal(err)
			}
			var set struct{ Keys []json.RawMessage }
			if err := json.Unmarshal(j, &set); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, set.Keys...)
		}
		raw, _ := json.Marshal(map[string]any{"keys": keys})
		recs = append(recs, store.Issuer{Issuer: url, JWKS: raw})
	}
	return recs
}

func issuerFromKey(t testing.TB, url, kid string, alg jwa.SignatureAlgorithm, key crypto.Signer) *demo.Issuer {
	t.Helper()
	is, err := demo.IssuerFromKey(url, kid, alg, key)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// rsa2048 is generated once: it is slow under the race detector.
func rsa2048(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func record(t testing.TB, is *demo.Issuer) store.Issuer {
	t.Helper()
	r, err := is.Record()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mint(t testing.TB, is *demo.Issuer, claims map[string]any, headers map[string]any) string {
	t.Helper()
	tok, err := is.Mint(claims, headers)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// goodClaims are valid claims of a token for device d1 acting for itself.
func goodClaims(is *demo.Issuer) map[string]any {
	return is.Claims("d1", "d1", aud, "publish:devices/d1/telemetry/# subscribe:devices/d1/commands/+", time.Hour)
}

func with(c map[string]any, kv ...any) map[string]any {
	out := maps.Clone(c)
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func without(c map[string]any, keys ...string) map[string]any {
	out := maps.Clone(c)
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

func b64json(t testing.TB, v any) string {
	t.Helper()
	return base64.RawURLEncoding.EncodeToString([]byte(jsonText(t, v)))
}

// cacheConfig is defaultConfig with room for n cached tokens.
func cacheConfig(n int) authn.VerifierConfig {
	cfg := defaultConfig()
	cfg.CacheSize = n
	return cfg
}

func defaultConfig() authn.VerifierConfig {
	return authn.VerifierConfig{
		Audiences:   []string{aud, "other-gateway"},
		MaxLifetime: 24 * time.Hour,
		MaxSize:     8 << 10,
		CacheSize:   100,
	}
}

func newVerifier(t testing.TB, cfg authn.VerifierConfig, issuers ...*demo.Issuer) *authn.Verifier {
	t.Helper()
	v := authn.NewVerifier(cfg)
	var recs []store.Issuer
	for _, is := range issuers {
		recs = append(recs, record(t, is))
	}
	if err := v.SetIssuers(recs); err != nil {
		t.Fatalf("SetIssuers: %v", err)
	}
	return v
}

// wantReason checks that err is an *authn.Error with reason want.
func wantReason(t testing.TB, err error, want authn.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want refusal with reason %q", want)
	}
	var ae *authn.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %T %v is not an *authn.Error (want reason %q)", err, err, want)
	}
	if got := authn.ReasonOf(err); got != want {
		t.Fatalf("reason = %q (%v), want %q", got, err, want)
	}
}

// ecPrivOf returns the issuer's private key as *ecdsa.PrivateKey.
func ecPrivOf(t testing.TB, is *demo.Issuer) *ecdsa.PrivateKey {
	t.Helper()
	var raw any
	if err := jwk.Export(is.Key, &raw); err != nil {
		t.Fatal(err)
	}
	priv, ok := raw.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("issuer key is %T, want *ecdsa.PrivateKey", raw)
	}
	return priv
}

// signES256 builds a compact JWS by hand with any header, validly signed by
// the issuer's P-256 key, so that a test can change only the header.
func signES256(t testing.TB, is *demo.Issuer, header, claims map[string]any) string {
	t.Helper()
	return signJWS(t, ecPrivOf(t, is), jsonText(t, header), jsonText(t, claims))
}

// signRawES256 signs header and claims given as JSON text, byte for byte, so
// that a test can write what a map cannot hold (a name twice).
func signRawES256(t testing.TB, is *demo.Issuer, header, claims string) string {
	t.Helper()
	return signJWS(t, ecPrivOf(t, is), header, claims)
}

// signJWS is the compact ES256 JWS of header and payload, given as text and
// signed by priv as they are.
func signJWS(t testing.TB, priv *ecdsa.PrivateKey, header, payload string) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64([]byte(header)) + "." + b64([]byte(payload))
	h := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...) // r || s
	return input + "." + b64(sig)
}

// jsonText is v as JSON text.
func jsonText(t testing.TB, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// newP384 is a fresh P-384 key.
func newP384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newEd25519 is a fresh Ed25519 key.
func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// impostors are issuers that claim issA's kid a1 with the wrong key: one
// with another P-256 key, one with a P-384 key (header alg ES384, not the
// key's).
func impostors(t testing.TB) (otherKey, es384 *demo.Issuer) {
	t.Helper()
	return newIssuer(t, issA, "a1"), issuerFromKey(t, issA, "a1", jwa.ES384(), newP384(t))
}

// trustAll is a verifier of defaultConfig trusting every key of issuers,
// all of which are issA's or issB's.
func trustAll(t testing.TB, issuers []*demo.Issuer) *authn.Verifier {
	t.Helper()
	v := authn.NewVerifier(defaultConfig())
	if err := v.SetIssuers(issuerRecords(t, issuers, issA, issB)); err != nil {
		t.Fatalf("SetIssuers: %v", err)
	}
	return v
}

// ---- outcomes ----

// wantOutcome checks err against want, "" meaning accepted, and reports
// whether it was a refusal (then with reason want).
func wantOutcome(t testing.TB, err error, want authn.Reason) (refused bool) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return false
	}
	wantReason(t, err, want)
	return true
}

// verifyWant verifies token with v and checks the outcome against want (""
// = accepted); a refusal must return no claims. It returns the refusal, nil
// when the token was accepted.
func verifyWant(t testing.TB, v *authn.Verifier, token string, want authn.Reason) error {
	t.Helper()
	c, err := v.Verify(token)
	if want != "" && c != nil {
		t.Errorf("Verify returned claims %+v with a refusal", c)
	}
	wantOutcome(t, err, want)
	return err
}

// verifyCase is a token and the outcome of verifying it ("" = accepted).
type verifyCase struct {
	name  string
	token string
	want  authn.Reason
}

// runVerifyCases verifies each case's token as a subtest; a refusal must not
// repeat the token (unless it is 20 bytes or shorter).
func runVerifyCases(t *testing.T, v *authn.Verifier, tests []verifyCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyWant(t, v, tt.token, tt.want)
			if err != nil && len(tt.token) > 20 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error text contains the token")
			}
		})
	}
}

// mustVerify verifies a token that must be accepted.
func mustVerify(t testing.TB, v *authn.Verifier, token string) *authn.Claims {
	t.Helper()
	c, err := v.Verify(token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantPublish checks what perms (named what in messages) lets a client
// publish to.
func wantPublish(t testing.TB, what string, perms interface{ CanPublish(string) bool }, topics map[string]bool) {
	t.Helper()
	for topic, want := range topics {
		if got := perms.CanPublish(topic); got != want {
			t.Errorf("%s.CanPublish(%q) = %v, want %v", what, topic, got, want)
		}
	}
}

// wantSubscribe checks which filters perms (named what in messages) lets a
// client subscribe to.
func wantSubscribe(t testing.TB, what string, perms interface{ CanSubscribe(string) bool }, filters map[string]bool) {
	t.Helper()
	for filter, want := range filters {
		if got := perms.CanSubscribe(filter); got != want {
			t.Errorf("%s.CanSubscribe(%q) = %v, want %v", what, filter, got, want)
		}
	}
}
