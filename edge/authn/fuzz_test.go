package authn_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, and
// every refusal must be an *authn.Error with a reason (so that the broker can
// choose a reason code) whose text does not repeat the credential.
func FuzzVerify(f *testing.F) {
	a := newIssuer(f, issA, "a1")
	v := newVerifier(f, cacheConfig(8), a)

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
		fuzzedVerify(t, v, token, fmt.Sprintf("%q", token))
	})
}

// FuzzVerifyCWT feeds arbitrary bytes to Verify by way of the CWT path. As
// for FuzzVerify, it must never panic and every refusal must be a
// credential *authn.Error; and whatever it accepts must be a COSE_Sign1 that
// the fixture key signed, checked here with go-cose directly.
func FuzzVerifyCWT(f *testing.F) {
	a := newIssuer(f, issA, "a1")
	v := newVerifier(f, cacheConfig(8), a)
	pub, err := cose.NewVerifier(cose.AlgorithmES256, &ecPrivOf(f, a).PublicKey)
	if err != nil {
		f.Fatal(err)
	}

	good := goodClaims(a)
	seeds := [][]byte{}
	for _, tags := range []demo.CWTTags{demo.TagCWT, demo.TagSign1, demo.Untagged} {
		tok := []byte(mintCWT(f, a, good, demo.WithCWTTags(tags)))
		seeds = append(seeds, tok)
		for _, n := range []int{1, 2, 3, 4, 10, len(tok) / 2, len(tok) - 65, len(tok) - 1} {
			seeds = append(seeds, tok[:n])
		}
	}
	for _, opts := range [][]demo.CWTOption{
		{demo.WithProtected(1, 5)},
		{demo.WithProtected(1, nil)},
		{demo.WithProtected(4, nil), demo.WithUnprotected(4, []byte("a1"))},
		{demo.WithProtected(2, []any{int64(4)})},
		{demo.WithProtected(3, "application/cwt")},
		{demo.WithUnprotected(7, []any{[]byte{}, map[any]any{}, []byte{1}})},
		{demo.WithClaim(8, map[any]any{int64(1): map[any]any{int64(1): int64(2), int64(-1): int64(1), int64(-2): make([]byte, 32), int64(-3): true}})},
		{demo.WithClaim(8, map[any]any{int64(3): []byte("psk")})},
		{demo.WithClaim(4, 1.5e300), demo.WithClaim(6, -1)},
		{demo.WithClaim(9, []byte("publish:#"))},
	} {
		seeds = append(seeds, []byte(mintCWT(f, a, good, opts...)))
	}
	seeds = append(seeds, []byte(signCWTPayload(f, a, []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'})))
	for _, s := range []string{"\x84", "\xd2", "\xd8\x3d", "\xd8\x3d\xd2\x84", "\xd1\x84\x40\xa0\x40\x40", "\x84\x40\xa0\xf6\x40", "\xd2\x84\x43\xa1\x01\x05\xa0\x40\x40", "\x9f\xff", "\xbf\xff", "\xff"} {
		seeds = append(seeds, []byte(s))
	}
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, token []byte) {
		if !fuzzedVerify(t, v, string(token), fmt.Sprintf("%x", token)) {
			return
		}
		if len(token) > 0 && token[0] < 0x80 {
			return // a JWT: FuzzVerify's
		}
		body := bytes.TrimPrefix(token, []byte{0xd8, 0x3d})
		var msg cose.Sign1Message
		var err error
		if len(body) > 0 && body[0] == 0x84 {
			err = (*cose.UntaggedSign1Message)(&msg).UnmarshalCBOR(body)
		} else {
			err = msg.UnmarshalCBOR(body)
		}
		if err != nil {
			t.Fatalf("Verify(%x) accepted what go-cose cannot parse: %v", token, err)
		}
		if err := msg.Verify(nil, pub); err != nil {
			t.Fatalf("Verify(%x) accepted a token the fixture key did not sign: %v", token, err)
		}
	})
}

// fuzzedVerify verifies a fuzzed token (shown so in messages) with a
// verifier trusting only key a1 of issA, and reports whether it was
// accepted: then with the claims of a good token, or else refused with a
// credential *authn.Error whose text does not repeat the token.
func fuzzedVerify(t *testing.T, v *authn.Verifier, token, shown string) (accepted bool) {
	t.Helper()
	c, err := v.Verify(token)
	if err == nil {
		if c == nil || c.Issuer != issA || c.Kid != "a1" || c.ClientID == "" || c.Subject == "" || c.JTI == "" || c.Scope == nil {
			t.Fatalf("Verify(%s) accepted with claims %+v", shown, c)
		}
		return true
	}
	if c != nil {
		t.Fatalf("Verify(%s) returned claims with error %v", shown, err)
	}
	var ae *authn.Error
	if !errors.As(err, &ae) {
		t.Fatalf("Verify(%s) error %T %v is not an *authn.Error", shown, err, err)
	}
	if ae.Reason == "" || authn.ReasonOf(err) != ae.Reason {
		t.Fatalf("Verify(%s) error %v has no reason", shown, err)
	}
	if !ae.Reason.BadCredentials() {
		t.Fatalf("Verify(%s) reason %q is not about the credential", shown, ae.Reason)
	}
	if len(token) >= 24 && strings.Contains(err.Error(), token) {
		t.Fatalf("error text %q repeats the token", err)
	}
	return false
}
