package authn_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/veraison/go-cose"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// ---- CWT helpers ----

func mintCWT(t testing.TB, is *demo.Issuer, claims map[string]any, opts ...demo.CWTOption) string {
	t.Helper()
	tok, err := is.MintCWT(claims, opts...)
	if err != nil {
		t.Fatalf("MintCWT: %v", err)
	}
	return string(tok)
}

var cborEnc = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func cborBytes(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cborEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signCWTPayload signs raw payload bytes with the issuer's P-256 key under a
// protected header of ES256 and its kid, as tag 61 around tag 18: for
// payloads MintCWT cannot make (duplicate keys, not a map).
func signCWTPayload(t testing.TB, is *demo.Issuer, payload []byte) string {
	t.Helper()
	prot := cborBytes(t, map[any]any{int64(1): int64(cose.AlgorithmES256), int64(4): []byte(is.Kid)})
	sig := coseSign(t, is, prot, payload)
	return string(cborBytes(t, cbor.Tag{Number: 61, Content: cbor.Tag{Number: 18, Content: []any{prot, map[any]any{}, payload, sig}}}))
}

// coseSign is the ES256 signature by the issuer's P-256 key of a
// COSE_Sign1 with protected header prot (encoded) and payload, without
// external data.
func coseSign(t testing.TB, is *demo.Issuer, prot, payload []byte) []byte {
	t.Helper()
	signer, err := cose.NewSigner(cose.AlgorithmES256, ecPrivOf(t, is))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign(rand.Reader, cborBytes(t, []any{"Signature1", prot, []byte{}, payload}))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// reassemble re-encodes a CWT with its parts changed by edit, keeping the signature.
func reassemble(t testing.TB, tok string, edit func(parts []cbor.RawMessage)) string {
	t.Helper()
	var outer cbor.Tag
	if err := cbor.Unmarshal([]byte(tok), &outer); err != nil || outer.Number != 61 {
		t.Fatalf("not a tag-61 CWT: %v", err)
	}
	inner, ok := outer.Content.(cbor.Tag)
	if !ok || inner.Number != 18 {
		t.Fatal("tag 61 does not hold tag 18")
	}
	var parts []cbor.RawMessage
	if err := cbor.Unmarshal(cborBytes(t, inner.Content), &parts); err != nil || len(parts) != 4 {
		t.Fatalf("COSE_Sign1 parts: %v", err)
	}
	edit(parts)
	return string(cborBytes(t, cbor.Tag{Number: 61, Content: cbor.Tag{Number: 18, Content: parts}}))
}

// coseKeyEC2 is a public P-256 key as a COSE_Key.
func coseKeyEC2(pub *ecdsa.PublicKey) map[any]any {
	b, _ := pub.Bytes() // 0x04 || x || y
	return map[any]any{int64(1): int64(2), int64(-1): int64(1), int64(-2): b[1:33], int64(-3): b[33:]}
}

// jwkThumbprint is the RFC 7638 thumbprint of a public key as a device would
// register it: a JWK in JSON, parsed back.
func jwkThumbprint(t testing.TB, pub any) string {
	t.Helper()
	k, err := jwk.Import(pub)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwk.ParseKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := parsed.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(sum)
}

// sameClaims compares verified claims field by field, the scope by its rules.
func sameClaims(t *testing.T, got, want *authn.Claims) {
	t.Helper()
	g, w := *got, *want
	if !reflect.DeepEqual(g.Scope.Rules(), w.Scope.Rules()) {
		t.Errorf("scope rules = %v, want %v", g.Scope.Rules(), w.Scope.Rules())
	}
	g.Scope, w.Scope = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("claims differ:\n got  %+v\n want %+v", g, w)
	}
}

// ---- tests ----

func TestVerifyCWTSameClaimsAsJWT(t *testing.T) {
	edPriv := newEd25519(t)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	issuers := []*demo.Issuer{
		newIssuer(t, issA, "es256"),
		issuerFromKey(t, issA, "ed", jwa.EdDSA(), edPriv),
		issuerFromKey(t, issA, "ed2", jwa.EdDSAEd25519(), edPriv),
		issuerFromKey(t, issA, "es384", jwa.ES384(), newP384(t)),
		issuerFromKey(t, issA, "es512", jwa.ES512(), p521),
		issuerFromKey(t, issB, "ps", jwa.PS256(), rsa2048(t)),
	}
	v := trustAll(t, issuers)

	now := time.Now().Truncate(time.Second)
	for _, is := range issuers {
		claims := map[string]any{
			"iss": is.URL, "sub": "alice", "aud": []string{"x", aud}, "client_id": "d1",
			"jti": base64.RawURLEncoding.EncodeToString([]byte("token-" + is.Kid)),
			"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
			"scope":  "publish:devices/d1/telemetry/# subscribe:devices/d1/commands/+",
			"cnf":    map[string]any{"kid": "psk-1"},
			"groups": []string{"g"}, // unknown: ignored by both
		}
		want, err := v.Verify(mint(t, is, claims, nil))
		if err != nil {
			t.Fatalf("%s JWT: %v", is.Alg, err)
		}
		for _, tags := range []demo.CWTTags{demo.TagCWT, demo.TagSign1, demo.Untagged} {
			t.Run(is.Alg.String()+"/"+[]string{"tag61", "tag18", "untagged"}[tags], func(t *testing.T) {
				got, err := v.Verify(mintCWT(t, is, claims, demo.WithCWTTags(tags)))
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				sameClaims(t, got, want)
				if got.Kid != is.Kid || got.Cnf.Kid != "psk-1" || got.JTI != claims["jti"] || !got.NotBefore.Equal(now.Add(-time.Minute)) {
					t.Errorf("claims = %+v", got)
				}
				if !got.Scope.CanPublish("devices/d1/telemetry/t") || got.Scope.CanPublish("devices/d2/telemetry/t") {
					t.Error("scope not as granted")
				}
			})
		}
	}

	// A jti that is not base64url is carried as a text "jti" and comes back as itself.
	a := issuers[0]
	c, err := v.Verify(mintCWT(t, a, with(goodClaims(a), "jti", "revoke-me")))
	if err != nil || c.JTI != "revoke-me" {
		t.Errorf("text jti: %+v, %v", c, err)
	}
}

func TestVerifyCWTKeyWithoutCOSEForm(t *testing.T) {
	// An RS256 key verifies JWTs only: a CWT naming it, whatever its alg, is
	// refused as a header that does not fit the key.
	rs := issuerFromKey(t, issA, "rs", jwa.RS256(), rsa2048(t))
	v := newVerifier(t, defaultConfig(), rs)
	if _, err := v.Verify(mint(t, rs, goodClaims(rs), nil)); err != nil {
		t.Fatalf("RS256 JWT refused: %v", err)
	}
	if _, err := rs.MintCWT(goodClaims(rs)); err == nil {
		t.Error("MintCWT with an RS256 key: no error")
	}
	ps := issuerFromKey(t, issA, "rs", jwa.PS256(), rsa2048(t)) // same key and kid, a COSE algorithm
	_, err := v.Verify(mintCWT(t, ps, goodClaims(ps)))
	wantReason(t, err, authn.ReasonBadHeader)
	if !strings.Contains(err.Error(), "RS256") {
		t.Errorf("error %q does not name the key's algorithm", err)
	}
}

func TestVerifyCWTRefusesBadTokens(t *testing.T) {
	a, v := refusalVerifier(t)
	good := goodClaims(a)
	goodTok := mintCWT(t, a, good)
	if _, err := v.Verify(goodTok); err != nil {
		t.Fatalf("good CWT refused: %v", err)
	}
	now := time.Now()
	imposter, es384 := impostors(t)
	big := strings.Repeat("x", 9000)

	flipSig := reassemble(t, goodTok, func(p []cbor.RawMessage) {
		sig := bytes.Clone(p[3])
		sig[len(sig)-1] ^= 1
		p[3] = sig
	})
	otherPayload := reassemble(t, goodTok, func(p []cbor.RawMessage) {
		var other []cbor.RawMessage
		_ = cbor.Unmarshal([]byte(mintCWT(t, a, with(good, "sub", "d2", "client_id", "d2"), demo.WithCWTTags(demo.Untagged))), &other)
		p[2] = other[2]
	})
	detached := reassemble(t, goodTok, func(p []cbor.RawMessage) { p[2] = cbor.RawMessage{0xf6} })
	noSig := reassemble(t, goodTok, func(p []cbor.RawMessage) { p[3] = cbor.RawMessage{0x40} })
	protKidUnprotKid := mintCWT(t, a, good, demo.WithUnprotected(4, []byte("a1")))
	algBoth := mintCWT(t, a, good, demo.WithUnprotected(1, -7))
	algUnprotOnly := mintCWT(t, a, good, demo.WithProtected(1, nil), demo.WithUnprotected(1, -7))

	// A MACed token with the public key as the secret: never even parsed.
	mac0 := append([]byte{0xd1}, []byte(goodTok)[3:]...)
	notSign1 := string(cborBytes(t, cbor.Tag{Number: 18, Content: []any{[]byte{}, map[any]any{}, []byte{}}}))
	goodBytes := []byte(goodTok)

	runVerifyCases(t, v, []verifyCase{
		{"control: tag 61", goodTok, ""},
		{"control: kid in the unprotected header", mintCWT(t, a, good, demo.WithProtected(4, nil), demo.WithUnprotected(4, []byte("a1"))), ""},
		{"control: content type 61", mintCWT(t, a, good, demo.WithProtected(3, 61)), ""},
		{"control: content type text", mintCWT(t, a, good, demo.WithProtected(3, "application/cwt")), ""},
		// The unprotected header is unsigned: only kid may be there, so a
		// signed token has one byte form (one cache entry).
		{"an extra unprotected parameter", mintCWT(t, a, good, demo.WithUnprotected("note", "hi")), authn.ReasonBadHeader},
		{"an unprotected content type", mintCWT(t, a, good, demo.WithUnprotected(3, 61)), authn.ReasonBadHeader},
		// typ (RFC 9596) naming another kind of CWT is not an access token.
		{"typ of an attestation result", mintCWT(t, a, good, demo.WithProtected(16, "application/eat+cwt")), authn.ReasonBadHeader},
		{"control: typ application/at+cwt", mintCWT(t, a, good, demo.WithProtected(16, "application/at+cwt")), ""},
		{"control: typ 61", mintCWT(t, a, good, demo.WithProtected(16, 61)), ""},

		{"wrong signature", flipSig, authn.ReasonBadSignature},
		{"payload of another token", otherPayload, authn.ReasonBadSignature},
		{"other key with the same kid", mintCWT(t, imposter, good), authn.ReasonBadSignature},
		{"header alg not the key's alg (ES384 key)", mintCWT(t, es384, good), authn.ReasonBadHeader},
		{"header alg ES384 over an ES256 signature", mintCWT(t, a, good, demo.WithProtected(1, int64(cose.AlgorithmES384))), authn.ReasonBadHeader},
		{"header alg EdDSA on an ES256 key", mintCWT(t, a, good, demo.WithProtected(1, int64(cose.AlgorithmEdDSA))), authn.ReasonBadHeader},
		{"alg HMAC 256/256 (5)", mintCWT(t, a, good, demo.WithProtected(1, 5)), authn.ReasonBadHeader},
		{"alg reserved (0)", mintCWT(t, a, good, demo.WithProtected(1, 0)), authn.ReasonBadHeader},
		{"alg RS256 (-257)", mintCWT(t, a, good, demo.WithProtected(1, -257)), authn.ReasonBadHeader},
		{"alg as text", mintCWT(t, a, good, demo.WithProtected(1, "ES256")), authn.ReasonBadHeader},
		{"no alg", mintCWT(t, a, good, demo.WithProtected(1, nil)), authn.ReasonBadHeader},
		{"alg in the unprotected header only", algUnprotOnly, authn.ReasonBadHeader},
		{"alg in both headers", algBoth, authn.ReasonBadHeader},
		{"kid in both headers", protKidUnprotKid, authn.ReasonBadHeader},
		{"unknown kid", mintCWT(t, newIssuer(t, issA, "zz"), good), authn.ReasonUnknownKey},
		{"unknown kid, unprotected", mintCWT(t, a, good, demo.WithProtected(4, nil), demo.WithUnprotected(4, []byte("zz"))), authn.ReasonUnknownKey},
		{"no kid", mintCWT(t, a, good, demo.WithProtected(4, nil)), authn.ReasonBadHeader},
		{"empty kid", mintCWT(t, a, good, demo.WithProtected(4, []byte{})), authn.ReasonBadHeader},
		{"kid not UTF-8", mintCWT(t, a, good, demo.WithProtected(4, []byte{0xff, 0xfe})), authn.ReasonBadHeader},
		{"kid as text", mintCWT(t, a, good, demo.WithProtected(4, "a1")), authn.ReasonMalformed},
		{"crit header", mintCWT(t, a, good, demo.WithProtected(2, []any{int64(4)})), authn.ReasonBadHeader},
		{"crit naming an extension", mintCWT(t, a, good, demo.WithProtected(2, []any{"x-ext"}), demo.WithProtected("x-ext", 1)), authn.ReasonBadHeader},
		{"content type application/cbor", mintCWT(t, a, good, demo.WithProtected(3, 60)), authn.ReasonBadHeader},
		{"content type text not cwt", mintCWT(t, a, good, demo.WithProtected(3, "application/json")), authn.ReasonBadHeader},
		{"content type unprotected not cwt", mintCWT(t, a, good, demo.WithUnprotected(3, 0)), authn.ReasonBadHeader},

		{"iss of another trusted issuer", mintCWT(t, a, with(good, "iss", issB)), authn.ReasonWrongIssuer},
		{"iss untrusted", mintCWT(t, a, with(good, "iss", "https://evil.example/")), authn.ReasonWrongIssuer},
		{"iss missing", mintCWT(t, a, without(good, "iss")), authn.ReasonWrongIssuer},
		{"iss under its JWT name only", mintCWT(t, a, without(good, "iss"), demo.WithClaim("iss", issA)), authn.ReasonWrongIssuer},
		{"wrong aud", mintCWT(t, a, with(good, "aud", "someone-else")), authn.ReasonWrongAudience},
		{"wrong aud list", mintCWT(t, a, with(good, "aud", []string{"x", "y"})), authn.ReasonWrongAudience},
		{"aud missing", mintCWT(t, a, without(good, "aud")), authn.ReasonWrongAudience},
		{"expired", mintCWT(t, a, with(good, "iat", now.Add(-2*time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix())), authn.ReasonExpired},
		{"nbf in the future", mintCWT(t, a, with(good, "nbf", now.Add(10*time.Minute).Unix())), authn.ReasonNotYetValid},
		{"iat in the future", mintCWT(t, a, with(good, "iat", now.Add(10*time.Minute).Unix(), "exp", now.Add(time.Hour).Unix())), authn.ReasonNotYetValid},
		{"lifetime too long", mintCWT(t, a, with(good, "exp", now.Add(25*time.Hour).Unix())), authn.ReasonBadClaims},
		{"sub missing", mintCWT(t, a, without(good, "sub")), authn.ReasonBadClaims},
		{"cti missing", mintCWT(t, a, without(good, "jti")), authn.ReasonBadClaims},
		{"cti empty", mintCWT(t, a, good, demo.WithClaim(7, []byte{})), authn.ReasonBadClaims},
		{"exp missing", mintCWT(t, a, without(good, "exp")), authn.ReasonBadClaims},
		{"iat missing", mintCWT(t, a, without(good, "iat")), authn.ReasonBadClaims},
		{"client_id missing", mintCWT(t, a, without(good, "client_id")), authn.ReasonBadClaims},
		{"client_id empty", mintCWT(t, a, with(good, "client_id", "")), authn.ReasonBadClaims},
		{"bad scope filter", mintCWT(t, a, with(good, "scope", "publish:a/#/b")), authn.ReasonBadClaims},
		{"scope not text", mintCWT(t, a, with(good, "scope", 42)), authn.ReasonBadClaims},
		{"scope bytes not UTF-8", mintCWT(t, a, good, demo.WithClaim(9, []byte{0xff})), authn.ReasonBadClaims},
		{"cti as text", mintCWT(t, a, good, demo.WithClaim(7, "abc")), authn.ReasonBadClaims},
		{"cti and jti", mintCWT(t, a, good, demo.WithClaim("jti", "abc")), authn.ReasonBadClaims},
		{"iss not text", mintCWT(t, a, good, demo.WithClaim(1, []byte(issA))), authn.ReasonBadClaims},
		{"sub not text", mintCWT(t, a, with(good, "sub", 7)), authn.ReasonBadClaims},
		{"client_id not text", mintCWT(t, a, with(good, "client_id", 7)), authn.ReasonBadClaims},
		{"aud not text", mintCWT(t, a, with(good, "aud", 7)), authn.ReasonBadClaims},
		{"aud array with a number", mintCWT(t, a, with(good, "aud", []any{aud, 7})), authn.ReasonBadClaims},
		{"exp text", mintCWT(t, a, good, demo.WithClaim(4, "tomorrow")), authn.ReasonBadClaims},
		{"exp tagged (tag 1)", mintCWT(t, a, good, demo.WithClaim(4, cbor.Tag{Number: 1, Content: now.Add(time.Hour).Unix()})), authn.ReasonBadClaims},
		{"exp negative", mintCWT(t, a, good, demo.WithClaim(4, -1)), authn.ReasonBadClaims},
		{"exp past year 9999", mintCWT(t, a, good, demo.WithClaim(4, int64(1)<<62)), authn.ReasonBadClaims},
		{"iat NaN", mintCWT(t, a, good, demo.WithClaim(6, float32(0)/float32(zero()))), authn.ReasonBadClaims},
		{"payload not a map", signCWTPayload(t, a, cborBytes(t, []any{1, 2})), authn.ReasonBadClaims},
		{"payload empty", signCWTPayload(t, a, []byte{}), authn.ReasonBadClaims},
		{"payload not CBOR", signCWTPayload(t, a, []byte{0xa1, 0x01}), authn.ReasonBadClaims},
		{"payload with a duplicate claim", signCWTPayload(t, a, []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'}), authn.ReasonBadClaims},
		{"payload with a byte-string key", signCWTPayload(t, a, []byte{0xa1, 0x41, 'k', 0x01}), authn.ReasonBadClaims},
		{"cnf empty", mintCWT(t, a, good, demo.WithClaim(8, map[any]any{})), authn.ReasonBadClaims},
		{"cnf not a map", mintCWT(t, a, good, demo.WithClaim(8, "psk")), authn.ReasonBadClaims},
		{"cnf with an unsupported member (Encrypted_COSE_Key)", mintCWT(t, a, good, demo.WithClaim(8, map[any]any{int64(2): []byte{1}})), authn.ReasonBadClaims},
		{"cnf kid beside an unsupported member", mintCWT(t, a, good, demo.WithClaim(8, map[any]any{int64(3): []byte("psk"), int64(5): []byte{1}})), authn.ReasonBadClaims},
		{"cnf with a text member", mintCWT(t, a, good, demo.WithClaim(8, map[any]any{"kid": []byte("psk")})), authn.ReasonBadClaims},
		{"cnf kid as text", mintCWT(t, a, good, demo.WithClaim(8, map[any]any{int64(3): "psk"})), authn.ReasonBadClaims},

		{"oversized", mintCWT(t, a, with(good, "pad", big)), authn.ReasonOversized},
		{"oversized garbage", "\xd2" + big, authn.ReasonOversized},
		{"malformed CBOR", "\xd8\x3d\xd2\x84\xff\xff\xff\xff", authn.ReasonMalformed},
		{"truncated", goodTok[:len(goodTok)-1], authn.ReasonMalformed},
		{"truncated to the tags", goodTok[:3], authn.ReasonMalformed},
		{"trailing bytes", goodTok + "\x00", authn.ReasonMalformed},
		{"array that is not a COSE_Sign1", notSign1, authn.ReasonMalformed},
		{"array of strings", string(cborBytes(t, []any{"a", "b", "c", "d"})), authn.ReasonMalformed},
		{"tag 61 around an untagged COSE_Sign1", "\xd8\x3d" + string(goodBytes[3:]), authn.ReasonMalformed},
		{"tag 61 alone", "\xd8\x3d", authn.ReasonMalformed},
		{"COSE_Mac0", string(mac0), authn.ReasonMalformed},
		{"COSE_Sign (tag 98)", "\xd8\x62" + string(goodBytes[3:]), authn.ReasonMalformed},
		{"a bare claims map", string(cborBytes(t, map[any]any{int64(1): issA})), authn.ReasonMalformed},
		{"detached payload", detached, authn.ReasonMalformed},
		{"empty signature", noSig, authn.ReasonMalformed},
		{"a single high byte", "\x84", authn.ReasonMalformed},
	})

	// Missing claims are named, the token id as cti.
	_, err := v.Verify(mintCWT(t, a, without(good, "jti", "client_id")))
	wantReason(t, err, authn.ReasonBadClaims)
	if !strings.Contains(err.Error(), "client_id, cti") {
		t.Errorf("error %q does not name the missing claims", err)
	}
}

// zero defeats the compiler's constant folding of 0/0.
func zero() int { return 0 }

func TestVerifyCWTClaimForms(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	good := goodClaims(a)
	now := time.Now().Truncate(time.Second)

	// NumericDates may be floats; the fraction is dropped, as for JWTs.
	exp := float64(now.Add(time.Hour).Unix()) + 0.5
	c, err := v.Verify(mintCWT(t, a, good, demo.WithClaim(4, exp), demo.WithClaim(6, float64(now.Unix()))))
	if err != nil {
		t.Fatalf("float NumericDates: %v", err)
	}
	if want := now.Add(time.Hour); !c.Expiry.Equal(want) || !c.IssuedAt.Equal(now) {
		t.Errorf("exp %s iat %s, want %s, %s", c.Expiry, c.IssuedAt, want, now)
	}
	jwtClaims, err := v.Verify(mint(t, a, with(good, "exp", exp), nil))
	if err != nil || !jwtClaims.Expiry.Equal(c.Expiry) {
		t.Errorf("JWT with the same float exp: %v, %v; CWT %v", jwtClaims.Expiry, err, c.Expiry)
	}
	// scope may be a byte string holding the text (RFC 9200 §5.8.1).
	c, err = v.Verify(mintCWT(t, a, good, demo.WithClaim(9, []byte("publish:devices/d1/telemetry/#"))))
	if err != nil || !c.Scope.CanPublish("devices/d1/telemetry/x") {
		t.Errorf("scope as bytes: %+v, %v", c, err)
	}
	// No scope: valid, grants nothing.
	c, err = v.Verify(mintCWT(t, a, without(good, "scope")))
	if err != nil || c.Scope == nil || c.Scope.CanPublish("devices/d1/telemetry/x") || c.Cnf.Bound() || !c.NotBefore.IsZero() {
		t.Errorf("no scope/cnf/nbf: %+v, %v", c, err)
	}
	// cti is any byte string; JTI is its base64url.
	c, err = v.Verify(mintCWT(t, a, good, demo.WithClaim(7, []byte{0, 1, 0xfe, 0xff})))
	if err != nil || c.JTI != "AAH-_w" {
		t.Errorf("cti bytes: JTI %q, %v", c.JTI, err)
	}
	// A text jti in place of cti.
	c, err = v.Verify(mintCWT(t, a, without(good, "jti"), demo.WithClaim("jti", "j-1")))
	if err != nil || c.JTI != "j-1" {
		t.Errorf("text jti: %+v, %v", c, err)
	}
	// A token at exactly the maximum lifetime is fine.
	if _, err := v.Verify(mintCWT(t, a, with(good, "iat", now.Unix(), "exp", now.Add(24*time.Hour).Unix()))); err != nil {
		t.Errorf("token living exactly max lifetime refused: %v", err)
	}
	// Unknown claims of any shape are ignored.
	if _, err := v.Verify(mintCWT(t, a, good, demo.WithClaim(-70000, map[any]any{int64(1): []any{1.5, nil, true}}), demo.WithClaim("x", []byte{1}))); err != nil {
		t.Errorf("unknown claims: %v", err)
	}
}

func TestVerifyCWTCnf(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	good := goodClaims(a)

	c, err := v.Verify(mintCWT(t, a, with(good, "cnf", map[string]any{"kid": "psk-7"})))
	if err != nil || c.Cnf.Kid != "psk-7" || c.Cnf.JKT != "" || c.Cnf.X5T != "" {
		t.Fatalf("cnf kid: %+v, %v", c, err)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edPub := ed.Public().(ed25519.PublicKey)
	ecKey := coseKeyEC2(&ec.PublicKey)
	edKey := map[any]any{int64(1): int64(1), int64(-1): int64(6), int64(-2): []byte(edPub)}
	for name, tt := range map[string]struct {
		key  map[any]any
		want string
	}{
		"EC2 P-256":                {ecKey, jwkThumbprint(t, &ec.PublicKey)},
		"EC2 P-256 with kid, alg":  {with2(ecKey, int64(2), []byte("dev-key"), int64(3), int64(-7)), jwkThumbprint(t, &ec.PublicKey)},
		"OKP Ed25519":              {edKey, jwkThumbprint(t, edPub)},
		"OKP Ed25519 with key_ops": {with2(edKey, int64(4), []any{int64(2)}), jwkThumbprint(t, edPub)},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(mintCWT(t, a, good, demo.WithClaim(8, map[any]any{int64(1): tt.key})))
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if c.Cnf.JKT != tt.want || !c.Cnf.Bound() {
				t.Errorf("cnf = %+v, want jkt %s", c.Cnf, tt.want)
			}
		})
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b384, _ := p384.PublicKey.Bytes()
	ecPrivD, _ := ec.Bytes()
	offCurve := with2(ecKey, int64(-3), bytes.Repeat([]byte{1}, 32))
	for name, key := range map[string]any{
		"P-384":                   map[any]any{int64(1): int64(2), int64(-1): int64(2), int64(-2): b384[1:49], int64(-3): b384[49:]},
		"private key included":    with2(ecKey, int64(-4), ecPrivD),
		"point not on the curve":  offCurve,
		"compressed point":        with2(ecKey, int64(-3), true),
		"short x":                 with2(ecKey, int64(-2), []byte{1, 2, 3}),
		"kty as text":             with2(ecKey, int64(1), "EC2"),
		"crv as text":             with2(ecKey, int64(-1), "P-256"),
		"symmetric key":           map[any]any{int64(1): int64(4), int64(-1): []byte("secret")},
		"X25519":                  map[any]any{int64(1): int64(1), int64(-1): int64(4), int64(-2): []byte(edPub)},
		"Ed25519 with y":          with2(edKey, int64(-3), []byte(edPub)),
		"alg not ES256 for P-256": with2(ecKey, int64(3), int64(-35)),
		"alg not EdDSA":           with2(edKey, int64(3), int64(-7)),
		"not a map":               []byte{1, 2},
		"unknown parameter":       with2(ecKey, int64(-5), 1),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(mintCWT(t, a, good, demo.WithClaim(8, map[any]any{int64(1): key})))
			wantReason(t, err, authn.ReasonBadClaims)
		})
	}
}

// with2 is a copy of a COSE map with some labels set.
func with2(m map[any]any, kv ...any) map[any]any {
	out := make(map[any]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestVerifyCWTMaxSizeAndCache(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	tok := mintCWT(t, a, goodClaims(a))
	cfg := defaultConfig()
	cfg.MaxSize = len(tok)
	v := newVerifier(t, cfg, a)
	c1, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("CWT of exactly max size refused: %v", err)
	}
	c2, err := v.Verify(tok)
	if err != nil || c1 != c2 || v.CacheLen() != 1 {
		t.Errorf("second Verify: same claims %v, cache %d, %v; want the cached claims", c1 == c2, v.CacheLen(), err)
	}
	if err := v.SetIssuers(nil); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(tok)
	wantReason(t, err, authn.ReasonUnknownKey)

	cfg.MaxSize = len(tok) - 1
	_, err = newVerifier(t, cfg, a).Verify(tok)
	wantReason(t, err, authn.ReasonOversized)
}

// The whole Authenticator path with CWTs: device lookup, subject, scope
// intersected with the class, revocation by cti, and a PSK-bound token.
func TestTokenCWT(t *testing.T) {
	f := newFixture(t)
	cwt := func(device, sub string, kv ...any) string {
		return mintCWT(t, f.iss, f.claims(device, sub, kv...))
	}

	tok := cwt("d1", "d1")
	p, err := f.auth.Token(tok, authn.Possession{}, "d1")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	want, _ := f.store.Device("d1")
	if !reflect.DeepEqual(p.Device, want) || p.Method != authn.MethodToken || p.Claims == nil || p.Claims.ClientID != "d1" || p.Claims.Kid != "a1" {
		t.Errorf("principal = %+v", p)
	}
	if wantEnd := p.Claims.Expiry; !p.Expires.Equal(wantEnd) {
		t.Errorf("End = %s, want exp %s (skew never extends exp)", p.Expires, wantEnd)
	}
	wantPublish(t, "Perms", p.Perms, map[string]bool{
		"devices/d1/telemetry/temp": true,  // class and scope
		"other/topic":               false, // scope only
		"fleet/d1/status":           false, // class only
		"devices/d2/telemetry/temp": false,
	})
	if !p.Perms.CanSubscribe("clients/d1/inbox") || p.Perms.CanSubscribe("devices/d1/commands/#") {
		t.Error("subscribe permissions not class ∩ scope")
	}
	if _, _, err := f.auth.Revalidate("d1", p.Claims, "d1"); err != nil {
		t.Errorf("Revalidate: %v", err)
	}
	if _, err := f.auth.Token(cwt("d1", "alice"), authn.Possession{}, "d1"); err != nil {
		t.Errorf("CWT with sub = owner refused: %v", err)
	}

	for _, tt := range []struct {
		name string
		tok  string
		want authn.Reason
	}{
		{"unknown device", cwt("ghost", "ghost"), authn.ReasonUnknownDevice},
		{"suspended device", cwt("d2", "d2"), authn.ReasonDeviceInactive},
		{"sub neither device nor owner", cwt("d1", "mallory"), authn.ReasonSubject},
		{"wrong audience", cwt("d1", "d1", "aud", "x"), authn.ReasonWrongAudience},
	} {
		t.Run(tt.name, func(t *testing.T) { f.wantTokenRefused(t, tt.tok, tt.want) })
	}

	// Bound to a DTLS PSK (RFC 9202) by cnf kid, or to a device key by a COSE_Key.
	kidTok := cwt("d1", "d1", "cnf", map[string]any{"kid": "psk-7"})
	if _, err := f.auth.Token(kidTok, authn.Possession{PSKIdentity: "psk-7"}, ""); err != nil {
		t.Errorf("cnf kid over its PSK session: %v", err)
	}
	_, err = f.auth.Token(kidTok, authn.Possession{PSKIdentity: "psk-8"}, "")
	wantReason(t, err, authn.ReasonCnfMismatch)
	_, err = f.auth.Token(kidTok, authn.Possession{}, "")
	wantReason(t, err, authn.ReasonPoPRequired)
	dev, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyTok := mintCWT(t, f.iss, f.iss.Claims("d1", "d1", aud, "", time.Hour), demo.WithClaim(8, map[any]any{int64(1): coseKeyEC2(&dev.PublicKey)}))
	if _, err := f.auth.Token(keyTok, authn.Possession{JKT: jwkThumbprint(t, &dev.PublicKey)}, ""); err != nil {
		t.Errorf("COSE_Key-bound CWT with its key proven: %v", err)
	}
	_, err = f.auth.Token(keyTok, authn.Possession{}, "")
	wantReason(t, err, authn.ReasonPoPRequired)

	// Revocation by token id names the cti as base64url.
	revoked := cwt("d1", "d1")
	c, err := f.auth.Verifier.Verify(revoked)
	if err != nil {
		t.Fatal(err)
	}
	f.apply(t, &store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: c.JTI, RevokedAt: time.Now()}}})
	_, err = f.auth.Token(revoked, authn.Possession{}, "")
	wantReason(t, err, authn.ReasonRevoked)
	if _, err := f.auth.Token(tok, authn.Possession{}, "d1"); err != nil {
		t.Errorf("another CWT refused after a revocation by jti: %v", err)
	}
	if _, _, err := f.auth.Revalidate("d1", c, ""); authn.ReasonOf(err) != authn.ReasonRevoked {
		t.Errorf("Revalidate of the revoked CWT: %v", err)
	}
	// So does a revocation of the device.
	f.apply(t, &store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "d1", RevokedAt: time.Now().Add(time.Minute)}}})
	_, err = f.auth.Token(tok, authn.Possession{}, "d1")
	wantReason(t, err, authn.ReasonRevoked)
}
