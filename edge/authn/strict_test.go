package authn_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/demo"
)

// claimsJSON is goodClaims as JSON text without its closing brace, for a test
// to append members to.
func claimsJSON(t testing.TB, c map[string]any) string {
	t.Helper()
	return strings.TrimSuffix(jsonText(t, c), "}")
}

const hdrA1 = `{"alg":"ES256","typ":"at+jwt","kid":"a1"}`

// TestVerifyRefusesNonCanonicalCompact: a signed token has one byte form.
// jwx decodes segments holding line breaks, padding or the standard
// alphabet, so each variant used to verify (a new cache entry and a full
// signature check every time); all are refused before any crypto and
// nothing is cached.
func TestVerifyRefusesNonCanonicalCompact(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	// A signature with a - or _ in it, for the standard-alphabet variant.
	var good string
	for range 100 {
		if good = mint(t, a, goodClaims(a), nil); strings.ContainsAny(strings.Split(good, ".")[2], "-_") {
			break
		}
	}
	if _, err := v.Verify(good); err != nil {
		t.Fatalf("good token refused: %v", err)
	}
	p := strings.Split(good, ".")
	// Padding to a multiple of four, or a lone '=' where none is due.
	pad := func(s string) string {
		if n := len(s) % 4; n != 0 {
			return s + strings.Repeat("=", 4-n)
		}
		return s + "="
	}
	std := strings.NewReplacer("-", "+", "_", "/").Replace
	// Trailing bits: the signature (64 bytes, 86 characters) leaves 4 bits
	// after its last byte; an encoder writes them as zero.
	last := p[2][len(p[2])-1]
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	loose := p[2][:len(p[2])-1] + string(alphabet[strings.IndexByte(alphabet, last)|1])

	for name, tok := range map[string]string{
		"CRLF inside the payload":            p[0] + "." + p[1][:10] + "\r\n" + p[1][10:] + "." + p[2],
		"LF inside the header":               p[0][:5] + "\n" + p[0][5:] + "." + p[1] + "." + p[2],
		"CR inside the signature":            p[0] + "." + p[1] + "." + p[2][:20] + "\r" + p[2][20:],
		"trailing CRLF":                      good + "\r\n",
		"space before a dot":                 p[0] + " ." + p[1] + "." + p[2],
		"tab in the payload":                 p[0] + "." + p[1][:7] + "\t" + p[1][7:] + "." + p[2],
		"padded header":                      pad(p[0]) + "." + p[1] + "." + p[2],
		"padded payload":                     p[0] + "." + pad(p[1]) + "." + p[2],
		"padded signature":                   p[0] + "." + p[1] + "." + pad(p[2]),
		"standard alphabet in the signature": p[0] + "." + p[1] + "." + std(p[2]),
		"non-zero trailing bits":             p[0] + "." + p[1] + "." + loose,
		"a NUL byte":                         p[0] + "." + p[1] + "\x00." + p[2],
		"a high byte":                        p[0] + "." + p[1] + "." + p[2] + "\x80",
		"a one-character group":              p[0] + "." + p[1] + "A." + p[2],
		"empty payload":                      p[0] + ".." + p[2],
	} {
		t.Run(name, func(t *testing.T) {
			if tok == good {
				t.Fatal("variant is the token itself")
			}
			c, err := v.Verify(tok)
			if c != nil {
				t.Fatalf("variant accepted: %+v", c)
			}
			wantReason(t, err, authn.ReasonMalformed)
			if v.CacheLen() != 1 {
				t.Errorf("CacheLen = %d after a refused variant, want 1", v.CacheLen())
			}
		})
	}
	// The refusal names the byte and where it is, never the token.
	_, err := v.Verify(p[0] + "." + p[1] + "\r\n." + p[2])
	if err == nil {
		t.Fatal("CRLF variant accepted")
	}
	if !strings.Contains(err.Error(), "carriage return") || !strings.Contains(err.Error(), "offset "+strconv.Itoa(len(p[0])+1+len(p[1]))) || strings.Contains(err.Error(), p[1]) {
		t.Errorf("refusal %q does not name the CR and its offset, or repeats the token", err)
	}
	// The canonical form is still a cache hit.
	c1, _ := v.Verify(good)
	c2, err := v.Verify(good)
	if err != nil || c1 != c2 {
		t.Errorf("good token after the variants: %v, cached %v", err, c1 == c2)
	}
}

// TestVerifyRefusesDuplicateMembers: a header or claims set with a member
// name twice says two things at once (jwx keeps the last, another reader
// the first); it is refused, at any depth, escapes resolved.
func TestVerifyRefusesDuplicateMembers(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, cacheConfig(0), a)
	good := goodClaims(a)
	body := claimsJSON(t, without(good, "sub"))
	many := ""
	for i := range 40 {
		many += fmt.Sprintf(`,"x%d":%d`, i, i)
	}
	tests := []struct {
		name, header, claims string
		want                 authn.Reason
		detail               string
	}{
		{"control", hdrA1, body + `,"sub":"d1"}`, "", ""},
		{"control: one name in two objects", hdrA1, body + `,"sub":"d1","ext":{"sub":"x","exp":"not a date here"}}`, "", ""},
		{"control: forty members", hdrA1, body + `,"sub":"d1"` + many + `}`, "", ""},
		{"alg twice in the header", `{"alg":"HS256","typ":"at+jwt","kid":"a1","alg":"ES256"}`, body + `,"sub":"d1"}`, authn.ReasonBadHeader, `header parameter "alg" appears twice`},
		{"kid twice in the header", `{"alg":"ES256","typ":"at+jwt","kid":"zz","kid":"a1"}`, body + `,"sub":"d1"}`, authn.ReasonBadHeader, `"kid" appears twice`},
		{"typ twice, once escaped", `{"alg":"ES256","typ":"JWT","kid":"a1","t\u0079p":"at+jwt"}`, body + `,"sub":"d1"}`, authn.ReasonBadHeader, `"typ" appears twice`},
		{"sub twice", hdrA1, body + `,"sub":"d2","sub":"d1"}`, authn.ReasonBadClaims, `claim "sub" appears twice`},
		{"client_id twice", hdrA1, body + `,"sub":"d1","client_id":"d2"}`, authn.ReasonBadClaims, `claim "client_id" appears twice`},
		{"exp twice", hdrA1, body + `,"sub":"d1","exp":` + strconv.FormatInt(time.Now().Add(20*time.Hour).Unix(), 10) + `}`, authn.ReasonBadClaims, `claim "exp" appears twice`},
		{"sub twice, once escaped", hdrA1, body + `,"sub":"d1","\u0073ub":"d2"}`, authn.ReasonBadClaims, `claim "sub" appears twice`},
		{"jkt twice in cnf", hdrA1, body + `,"sub":"d1","cnf":{"jkt":"a","jkt":"b"}}`, authn.ReasonBadClaims, `member "jkt" appears twice in claim "cnf"`},
		{"twice in an array's object", hdrA1, body + `,"sub":"d1","ext":[{"a":1,"a":2}]}`, authn.ReasonBadClaims, `member "a" appears twice in claim "ext"`},
		{"twice after forty members", hdrA1, body + `,"sub":"d1"` + many + `,"x7":0}`, authn.ReasonBadClaims, `claim "x7" appears twice`},
		{"a long name twice, cut in the refusal", hdrA1, body + `,"sub":"d1","` + strings.Repeat("n", 500) + `":1,"` + strings.Repeat("n", 500) + `":2}`, authn.ReasonBadClaims, `"` + strings.Repeat("n", 40) + `..." appears twice`},
		{"an empty name twice", hdrA1, body + `,"sub":"d1","":1,"":2}`, authn.ReasonBadClaims, `claim "" appears twice`},
		{"claims not UTF-8", hdrA1, body + `,"sub":"d1","x":"` + "\xff" + `"}`, authn.ReasonBadClaims, "not UTF-8"},
		{"data after the claims", hdrA1, body + `,"sub":"d1"} {}`, authn.ReasonBadClaims, "data after"},
		{"header not UTF-8", `{"alg":"ES256","typ":"at+jwt","kid":"a1","x":"` + "\xfe" + `"}`, body + `,"sub":"d1"}`, authn.ReasonMalformed, "not UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyWant(t, v, signRawES256(t, a, tt.header, tt.claims), tt.want)
			if err != nil && !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("refusal %q does not say %q", err, tt.detail)
			}
		})
	}
}

// TestVerifyNumericDateIsANumber: RFC 7519 §2 NumericDate is a JSON number;
// jwx also reads "1767225600" and RFC 3339 strings. The refusal names the claim.
func TestVerifyNumericDateIsANumber(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, cacheConfig(0), a)
	now := time.Now()
	good := goodClaims(a)
	str := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	tests := []struct {
		name   string
		claims map[string]any
		detail string // "" = accepted
	}{
		{"control: integers", good, ""},
		{"control: a fraction", with(good, "exp", float64(now.Add(time.Hour).Unix())+0.5), ""},
		{"control: an exponent", with(good, "iat", json.Number(strconv.FormatFloat(float64(now.Unix()), 'e', -1, 64))), ""},
		{"exp as a string", with(good, "exp", str(now.Add(time.Hour))), "exp is a JSON string"},
		{"exp as an RFC 3339 string", with(good, "exp", now.Add(time.Hour).UTC().Format(time.RFC3339)), "exp is a JSON string"},
		{"nbf as a string", with(good, "nbf", str(now.Add(-time.Minute))), "nbf is a JSON string"},
		{"iat as a string", with(good, "iat", str(now)), "iat is a JSON string"},
		{"exp null", with(good, "exp", nil), "exp is null"},
		{"exp true", with(good, "exp", true), "exp is a boolean"},
		{"exp an object", with(good, "exp", map[string]any{"t": 1}), "exp is an object"},
		{"exp an array", with(good, "exp", []int64{now.Add(time.Hour).Unix()}), "exp is an array"},
		{"exp negative", with(good, "exp", -1), "exp is a number outside"},
		{"nbf past year 9999", with(good, "nbf", 1e15), "nbf is a number outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := authn.ReasonBadClaims
			if tt.detail == "" {
				want = ""
			}
			err := verifyWant(t, v, mint(t, a, tt.claims, nil), want)
			if err != nil && (!strings.Contains(err.Error(), tt.detail) || !strings.Contains(err.Error(), "NumericDate")) {
				t.Errorf("refusal %q does not say %q (not a NumericDate)", err, tt.detail)
			}
		})
	}
}

// signCWTRaw assembles a tag-61 CWT from raw CBOR header bytes, signing
// prot and payload as they are: for headers a map cannot hold (a label twice).
func signCWTRaw(t testing.TB, is *demo.Issuer, prot, unprot, payload []byte) string {
	t.Helper()
	sig := coseSign(t, is, prot, payload)
	out := []byte{0xd8, 0x3d, 0xd2, 0x84}
	out = append(out, cborBytes(t, prot)...)
	out = append(out, unprot...)
	out = append(out, cborBytes(t, payload)...)
	return string(append(out, cborBytes(t, sig)...))
}

// TestVerifyCWTStrict holds CWTs to what the JWT path now insists on: one
// byte form per signed token (the envelope's heads are outside the
// signature; a longer head used to verify, as a new cache entry), and no
// map key twice, in either header or at any depth of the claims.
func TestVerifyCWTStrict(t *testing.T) {
	a := newIssuer(t, issA, "a1")
	v := newVerifier(t, defaultConfig(), a)
	good := mintCWT(t, a, goodClaims(a))
	if _, err := v.Verify(good); err != nil {
		t.Fatalf("good CWT refused: %v", err)
	}
	g := []byte(good)
	// d8 3d d2 | 84 | 47 <protected: a2 01 26 04 42 61 31> | a0 | 58 nn <payload> | 58 40 <signature>
	if string(g[:5]) != "\xd8\x3d\xd2\x84\x47" || g[12] != 0xa0 || string(g[len(g)-66:len(g)-64]) != "\x58\x40" {
		t.Fatalf("unexpected CWT layout % x", g[:16])
	}
	splice := func(at, n int, with ...byte) string {
		return string(g[:at]) + string(with) + string(g[at+n:])
	}
	sigAt := len(g) - 66
	var parts []cbor.RawMessage
	var payload []byte
	if err := cbor.Unmarshal(g[3:], &parts); err != nil || len(parts) != 4 || cbor.Unmarshal(parts[2], &payload) != nil {
		t.Fatal("cannot read the COSE_Sign1")
	}
	protOK := []byte{0xa2, 0x01, 0x26, 0x04, 0x42, 'a', '1'}

	tests := []verifyCase{
		{"control: re-assembled by hand", signCWTRaw(t, a, protOK, []byte{0xa0}, payload), ""},
		{"signature with a 2-byte length head", splice(sigAt, 2, 0x59, 0x00, 0x40), authn.ReasonMalformed},
		{"signature with an 8-byte length head", splice(sigAt, 2, 0x5b, 0, 0, 0, 0, 0, 0, 0, 0x40), authn.ReasonMalformed},
		{"protected header with a 1-byte length head", splice(4, 1, 0x58, 0x07), authn.ReasonMalformed},
		{"array with a 1-byte length head", splice(3, 1, 0x98, 0x04), authn.ReasonMalformed},
		{"unprotected header with a 1-byte length head", splice(12, 1, 0xb8, 0x00), authn.ReasonMalformed},
		{"protected header with alg twice", signCWTRaw(t, a, []byte{0xa3, 0x01, 0x26, 0x04, 0x42, 'a', '1', 0x01, 0x26}, []byte{0xa0}, payload), authn.ReasonMalformed},
		{"protected header with kid twice", signCWTRaw(t, a, []byte{0xa3, 0x01, 0x26, 0x04, 0x42, 'z', 'z', 0x04, 0x42, 'a', '1'}, []byte{0xa0}, payload), authn.ReasonMalformed},
		{"unprotected header with kid twice", signCWTRaw(t, a, []byte{0xa1, 0x01, 0x26}, []byte{0xa2, 0x04, 0x42, 'z', 'z', 0x04, 0x42, 'a', '1'}, payload), authn.ReasonMalformed},
		{"cnf with kid twice", mintCWT(t, a, goodClaims(a), demo.WithClaim(8, cbor.RawMessage{0xa2, 0x03, 0x43, 'p', 's', 'k', 0x03, 0x43, 'p', 's', 'l'})), authn.ReasonBadClaims},
		{"exp as a text string", mintCWT(t, a, goodClaims(a), demo.WithClaim(4, strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))), authn.ReasonBadClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := v.CacheLen()
			if verifyWant(t, v, tt.token, tt.want) != nil && v.CacheLen() != before {
				t.Errorf("CacheLen %d → %d after a refusal", before, v.CacheLen())
			}
		})
	}
}
