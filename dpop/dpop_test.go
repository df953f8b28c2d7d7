package dpop

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

const (
	tokenURL = "https://auth.example.com/oauth/token"
	apiURL   = "https://gw.example.com/api/v1/publish"
)

var t0 = time.Unix(1_800_000_000, 0)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newEC(t testing.TB, crv elliptic.Curve) (*ecdsa.PrivateKey, jwk.Key) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(crv, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, k
}

func verifier(c *clock, o Options) *Verifier {
	o.Now = c.Now
	return NewVerifier(o)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func pubJSON(t testing.TB, k jwk.Key) json.RawMessage {
	t.Helper()
	pub, err := jwk.PublicKeyOf(k)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// raw makes a proof from any header and claims, signed with priv's ES256
// (whatever the header says), so that each refusal can be built.
func raw(t testing.TB, hdr, claims map[string]any, priv *ecdsa.PrivateKey) string {
	t.Helper()
	hb, _ := json.Marshal(hdr)
	cb, _ := json.Marshal(claims)
	in := b64(hb) + "." + b64(cb)
	return in + "." + esSign(t, priv, in)
}

func esSign(t testing.TB, priv *ecdsa.PrivateKey, in string) string {
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return b64(sig)
}

func goodClaims(now time.Time) map[string]any {
	return map[string]any{"jti": rand.Text(), "htm": "POST", "htu": tokenURL, "iat": now.Unix()}
}

func goodHeader(t testing.TB, k jwk.Key) map[string]any {
	return map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": pubJSON(t, k)}
}

// wantErr checks err is an *Error of code whose detail holds substr.
func wantErr(t *testing.T, err error, code, substr string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v, want *dpop.Error %s", err, code)
	}
	if e.Code != code || !strings.Contains(e.Detail, substr) {
		t.Fatalf("error %q, want code %s with %q", e.Error(), code, substr)
	}
}

func TestAccepted(t *testing.T) {
	c := &clock{t0}
	v := verifier(c, Options{})
	_, k256 := newEC(t, elliptic.P256())
	_, k384 := newEC(t, elliptic.P384())
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ked, err := jwk.Import(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	for name, k := range map[string]jwk.Key{"ES256": k256, "ES384": k384, "EdDSA": ked} {
		t.Run(name, func(t *testing.T) {
			p, err := Sign(k, "GET", apiURL, "the-token", "", c.now)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(p, Request{Method: "GET", URL: apiURL, AccessToken: "the-token"})
			if err != nil {
				t.Fatal(err)
			}
			want, err := Thumbprint(k)
			if err != nil {
				t.Fatal(err)
			}
			if got.JKT != want || got.JTI == "" || !got.IssuedAt.Equal(c.now) {
				t.Fatalf("proof %+v, want JKT %s and iat %s", got, want, c.now)
			}
			if priv, _ := jwk.IsPrivateKey(got.Key); priv {
				t.Fatal("Proof.Key is a private key")
			}
			// A token endpoint request: no access token, no ath.
			p, _ = Sign(k, "POST", tokenURL, "", "", c.now)
			if _, err := v.Verify(p, Request{Method: "POST", URL: tokenURL}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestThumbprintRFC7638(t *testing.T) {
	// RFC 7638 §3.1's example key and thumbprint.
	k, err := jwk.ParseKey([]byte(`{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(k)
	if err != nil {
		t.Fatal(err)
	}
	if got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Fatalf("thumbprint %s", got)
	}
}

func TestRefusals(t *testing.T) {
	c := &clock{t0}
	priv, k := newEC(t, elliptic.P256())
	other, _ := newEC(t, elliptic.P256())
	tok := Request{Method: "POST", URL: tokenURL}
	edit := func(h func(map[string]any), cl func(map[string]any)) string {
		hdr, claims := goodHeader(t, k), goodClaims(c.now)
		if h != nil {
			h(hdr)
		}
		if cl != nil {
			cl(claims)
		}
		return raw(t, hdr, claims, priv)
	}
	privJSON, _ := json.Marshal(k)
	hmacProof := func() string {
		hb, _ := json.Marshal(map[string]any{"typ": "dpop+jwt", "alg": "HS256", "jwk": json.RawMessage(`{"kty":"oct","k":"c2VjcmV0"}`)})
		cb, _ := json.Marshal(goodClaims(c.now))
		in := b64(hb) + "." + b64(cb)
		m := hmac.New(sha256.New, []byte("secret"))
		m.Write([]byte(in))
		return in + "." + b64(m.Sum(nil))
	}
	noneProof := func() string {
		hb, _ := json.Marshal(map[string]any{"typ": "dpop+jwt", "alg": "none", "jwk": pubJSON(t, k)})
		cb, _ := json.Marshal(goodClaims(c.now))
		return b64(hb) + "." + b64(cb) + "." + b64([]byte("x"))
	}
	good := edit(nil, nil)
	parts := strings.Split(good, ".")
	badSig := parts[0] + "." + parts[1] + "." + esSign(t, other, parts[0]+"."+parts[1])

	cases := []struct {
		name, proof string
		req         Request
		code, want  string
	}{
		{"empty", "", tok, CodeInvalidProof, "no DPoP proof"},
		{"two proofs", good + "," + good, tok, CodeInvalidProof, "not one compact JWS"},
		{"not a JWS", "abc.def", tok, CodeInvalidProof, "not one compact JWS"},
		{"typ missing", edit(func(h map[string]any) { delete(h, "typ") }, nil), tok, CodeInvalidProof, "typ"},
		{"typ JWT", edit(func(h map[string]any) { h["typ"] = "JWT" }, nil), tok, CodeInvalidProof, "typ"},
		{"alg none", noneProof(), tok, CodeInvalidProof, `alg "none" is not allowed`},
		{"alg HS256", hmacProof(), tok, CodeInvalidProof, `alg "HS256" is not allowed`},
		{"alg not allowed", edit(func(h map[string]any) { h["alg"] = "RS256" }, nil), tok, CodeInvalidProof, `alg "RS256" is not allowed`},
		{"alg ES384 with a P-256 key", edit(func(h map[string]any) { h["alg"] = "ES384" }, nil), tok, CodeInvalidProof, "does not match the key"},
		{"alg EdDSA with an EC key", edit(func(h map[string]any) { h["alg"] = "EdDSA" }, nil), tok, CodeInvalidProof, "does not match the key"},
		{"no jwk", edit(func(h map[string]any) { delete(h, "jwk") }, nil), tok, CodeInvalidProof, "no jwk"},
		{"private key in jwk", edit(func(h map[string]any) { h["jwk"] = json.RawMessage(privJSON) }, nil), tok, CodeInvalidProof, "private"},
		{"crit", edit(func(h map[string]any) { h["crit"] = []string{"x"}; h["x"] = 1 }, nil), tok, CodeInvalidProof, "crit"},
		{"bad signature", badSig, tok, CodeInvalidProof, "signature"},
		{"no jti", edit(nil, func(c map[string]any) { delete(c, "jti") }), tok, CodeInvalidProof, "no jti"},
		{"no htm", edit(nil, func(c map[string]any) { delete(c, "htm") }), tok, CodeInvalidProof, "no htm"},
		{"no htu", edit(nil, func(c map[string]any) { delete(c, "htu") }), tok, CodeInvalidProof, "no htu"},
		{"no iat", edit(nil, func(c map[string]any) { delete(c, "iat") }), tok, CodeInvalidProof, "no iat"},
		{"iat a string", edit(nil, func(c map[string]any) { c["iat"] = fmt.Sprint(t0.Unix()) }), tok, CodeInvalidProof, "NumericDate"},
		{"wrong htm", edit(nil, func(c map[string]any) { c["htm"] = "GET" }), tok, CodeInvalidProof, "htm"},
		{"htm lowercase", edit(nil, func(c map[string]any) { c["htm"] = "post" }), tok, CodeInvalidProof, "htm"},
		{"htu other path", edit(nil, func(c map[string]any) { c["htu"] = "https://auth.example.com/oauth/revoke" }), tok, CodeInvalidProof, "htu"},
		{"htu other host", edit(nil, func(c map[string]any) { c["htu"] = "https://evil.example.com/oauth/token" }), tok, CodeInvalidProof, "htu"},
		{"htu other scheme", edit(nil, func(c map[string]any) { c["htu"] = "http://auth.example.com/oauth/token" }), tok, CodeInvalidProof, "htu"},
		{"htu other port", edit(nil, func(c map[string]any) { c["htu"] = "https://auth.example.com:8443/oauth/token" }), tok, CodeInvalidProof, "htu"},
		{"htu relative", edit(nil, func(c map[string]any) { c["htu"] = "/oauth/token" }), tok, CodeInvalidProof, "htu"},
		{"iat too old", edit(nil, func(c map[string]any) { c["iat"] = t0.Add(-61 * time.Second).Unix() }), tok, CodeInvalidProof, "in the past"},
		{"iat in the future", edit(nil, func(c map[string]any) { c["iat"] = t0.Add(6 * time.Second).Unix() }), tok, CodeInvalidProof, "in the future"},
		{"ath at the token endpoint", edit(nil, func(c map[string]any) { c["ath"] = b64(make([]byte, 32)) }), tok, CodeInvalidProof, "ath present"},
		{"ath missing", edit(nil, nil), Request{Method: "POST", URL: tokenURL, AccessToken: "tok"}, CodeInvalidProof, "no ath"},
		{"ath wrong", edit(nil, func(c map[string]any) {
			s := sha256.Sum256([]byte("another token"))
			c["ath"] = b64(s[:])
		}), Request{Method: "POST", URL: tokenURL, AccessToken: "tok"}, CodeInvalidProof, "ath is not"},
		{"ath hex not base64url", edit(nil, func(c map[string]any) {
			s := sha256.Sum256([]byte("tok"))
			c["ath"] = fmt.Sprintf("%x", s)
		}), Request{Method: "POST", URL: tokenURL, AccessToken: "tok"}, CodeInvalidProof, "ath is not"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Even a Verifier told to allow none and HS256 must not.
			v := verifier(c, Options{Algs: []string{"ES256", "ES384", "EdDSA", "none", "HS256"}})
			_, err := v.Verify(tc.proof, tc.req)
			wantErr(t, err, tc.code, tc.want)
		})
	}
}

func TestDuplicateMember(t *testing.T) {
	c := &clock{t0}
	priv, k := newEC(t, elliptic.P256())
	hb, _ := json.Marshal(goodHeader(t, k))
	hb = append(hb[:len(hb)-1], []byte(`,"alg":"EdDSA"}`)...)
	cb, _ := json.Marshal(goodClaims(c.now))
	in := b64(hb) + "." + b64(cb)
	_, err := verifier(c, Options{}).Verify(in+"."+esSign(t, priv, in), Request{Method: "POST", URL: tokenURL})
	wantErr(t, err, CodeInvalidProof, "twice")
}

func TestHTUNormalised(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	v := verifier(c, Options{})
	for _, pair := range [][2]string{
		{"https://auth.example.com/oauth/token?x=1#frag", tokenURL},      // query and fragment ignored
		{tokenURL, "https://auth.example.com/oauth/token?grant=refresh"}, // also on the request's side
		{"HTTPS://Auth.Example.COM:443/oauth/token", tokenURL},
		{"https://auth.example.com/oauth/./x/../token", tokenURL},
		{"https://auth.example.com/%6Fauth/token", tokenURL},
		{"http://gw.local:80", "http://gw.local/"},
		{"https://gw.local:8443/a%2fb", "https://GW.local:8443/a%2Fb"},
	} {
		p, err := Sign(k, "POST", pair[0], "", "", c.now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(p, Request{Method: "POST", URL: pair[1]}); err != nil {
			t.Errorf("htu %s for %s: %v", pair[0], pair[1], err)
		}
	}
	for _, pair := range [][2]string{
		{"https://auth.example.com/oauth/token/", tokenURL},
		{"https://auth.example.com/OAUTH/token", tokenURL},
		{"https://auth.example.com/a%2Fb", "https://auth.example.com/a/b"},
	} {
		p, _ := Sign(k, "POST", pair[0], "", "", c.now)
		_, err := v.Verify(p, Request{Method: "POST", URL: pair[1]})
		wantErr(t, err, CodeInvalidProof, "htu")
	}
}

func TestIatWindow(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	v := verifier(c, Options{MaxAge: 30 * time.Second, Skew: 2 * time.Second})
	for _, d := range []time.Duration{-30 * time.Second, 0, 2 * time.Second} {
		p, _ := Sign(k, "POST", tokenURL, "", "", c.now.Add(d))
		if _, err := v.Verify(p, Request{Method: "POST", URL: tokenURL}); err != nil {
			t.Errorf("iat now%+v: %v", d, err)
		}
	}
	p, _ := Sign(k, "POST", tokenURL, "", "", c.now.Add(-31*time.Second))
	_, err := v.Verify(p, Request{Method: "POST", URL: tokenURL})
	wantErr(t, err, CodeInvalidProof, "in the past")
	p, _ = Sign(k, "POST", tokenURL, "", "", c.now.Add(3*time.Second))
	_, err = v.Verify(p, Request{Method: "POST", URL: tokenURL})
	wantErr(t, err, CodeInvalidProof, "in the future")
}

func TestReplay(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	v := verifier(c, Options{})
	req := Request{Method: "POST", URL: tokenURL}
	p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	if _, err := v.Verify(p, req); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(p, req)
	wantErr(t, err, CodeInvalidProof, "replayed")
	// Still refused for as long as its iat passes (MaxAge 60s, Skew 5s),
	// across generation changes.
	for _, d := range []time.Duration{30 * time.Second, 59 * time.Second, 60 * time.Second} {
		c.now = t0.Add(d)
		q, _ := Sign(k, "POST", tokenURL, "", "", c.now) // advance generations
		if _, err := v.Verify(q, req); err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(p, req)
		wantErr(t, err, CodeInvalidProof, "replayed")
	}
	c.now = t0.Add(61 * time.Second)
	_, err = v.Verify(p, req)
	wantErr(t, err, CodeInvalidProof, "in the past")

	// A proof made Skew ahead is kept until it ages out, whatever the
	// rhythm of generations.
	v = verifier(c, Options{})
	start := c.now
	p, _ = Sign(k, "POST", tokenURL, "", "", start.Add(5*time.Second))
	if _, err := v.Verify(p, req); err != nil {
		t.Fatal(err)
	}
	for s := time.Duration(0); s <= 65*time.Second; s += 13 * time.Second {
		c.now = start.Add(s)
		q, _ := Sign(k, "POST", tokenURL, "", "", c.now)
		if _, err := v.Verify(q, req); err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(p, req)
		wantErr(t, err, CodeInvalidProof, "replayed")
	}
}

func TestReplayCapacityFull(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	v := verifier(c, Options{ReplayCapacity: 3})
	req := Request{Method: "POST", URL: tokenURL}
	for i := range 3 {
		p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
		if _, err := v.Verify(p, req); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
	}
	// Full: refused (ids are not evicted early), also after one generation.
	for _, d := range []time.Duration{0, 40 * time.Second, 66 * time.Second} {
		c.now = t0.Add(d)
		p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
		_, err := v.Verify(p, req)
		wantErr(t, err, CodeInvalidProof, "too many proofs")
	}
	// Two generations on, the old ids are gone and there is room again.
	c.now = t0.Add(140 * time.Second)
	p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	if _, err := v.Verify(p, req); err != nil {
		t.Fatal(err)
	}
}

func TestNonce(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	req := Request{Method: "POST", URL: tokenURL}
	if n := verifier(c, Options{}).Nonce(); n != "" {
		t.Fatalf("nonce %q with Nonce off", n)
	}
	v := verifier(c, Options{Nonce: true, NonceKey: []byte("0123456789abcdef0123456789abcdef")})

	p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	_, err := v.Verify(p, req)
	wantErr(t, err, CodeUseNonce, "required")

	p, _ = Sign(k, "POST", tokenURL, "", "not-ours", c.now)
	_, err = v.Verify(p, req)
	wantErr(t, err, CodeUseNonce, "stale")

	// Another key's nonce is not ours either.
	n2 := verifier(c, Options{Nonce: true}).Nonce()
	p, _ = Sign(k, "POST", tokenURL, "", n2, c.now)
	_, err = v.Verify(p, req)
	wantErr(t, err, CodeUseNonce, "stale")

	n := v.Nonce()
	if n == "" {
		t.Fatal("no nonce")
	}
	p, _ = Sign(k, "POST", tokenURL, "", n, c.now)
	if _, err := v.Verify(p, req); err != nil {
		t.Fatal(err)
	}
	// Valid in its step and the next (steps of MaxAge), then stale.
	c.now = c.now.Add(60 * time.Second)
	p, _ = Sign(k, "POST", tokenURL, "", n, c.now)
	if _, err := v.Verify(p, req); err != nil {
		t.Fatalf("nonce one step on: %v", err)
	}
	c.now = c.now.Add(60 * time.Second)
	p, _ = Sign(k, "POST", tokenURL, "", n, c.now)
	_, err = v.Verify(p, req)
	wantErr(t, err, CodeUseNonce, "stale")
	if v.Nonce() == n {
		t.Fatal("the nonce did not change in two steps")
	}
}

func TestErrorNeverHoldsToken(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	const secret = "secret-access-token"
	p, _ := Sign(k, "GET", apiURL, "other", "", c.now)
	_, err := verifier(c, Options{}).Verify(p, Request{Method: "GET", URL: apiURL, AccessToken: secret})
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v", err)
	}
}

// TestJWCryptoProof: a proof made by a stock JOSE library (Debian's
// python3-jwcrypto), not by our Sign, verifies, and its key's thumbprint as
// jwcrypto computes it is our JKT.
func TestJWCryptoProof(t *testing.T) {
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import jwcrypto").CombinedOutput(); err != nil {
		t.Fatalf("%s has no jwcrypto (%v: %s): install python3-jwcrypto (.ci/run does)", py, err, out)
	}
	script := `
import json, sys, time, uuid, hashlib, base64
from jwcrypto import jwk, jws
key = jwk.JWK.generate(kty="EC", crv="P-256")
url, token = sys.argv[1], sys.argv[2]
ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
claims = {"jti": str(uuid.uuid4()), "htm": "GET", "htu": url, "iat": int(time.time()), "ath": ath}
s = jws.JWS(json.dumps(claims).encode())
s.add_signature(key, None, json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)}))
print(s.serialize(compact=True))
print(key.thumbprint())
`
	out, err := exec.Command(py, "-c", script, apiURL+"?q=1", "tok-123").Output()
	if err != nil {
		t.Fatalf("jwcrypto: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		t.Fatalf("jwcrypto printed %q", out)
	}
	v := NewVerifier(Options{})
	p, err := v.Verify(lines[0], Request{Method: "GET", URL: apiURL, AccessToken: "tok-123"})
	if err != nil {
		t.Fatalf("jwcrypto's proof refused: %v", err)
	}
	if p.JKT != lines[1] {
		t.Fatalf("JKT %s, jwcrypto's thumbprint %s", p.JKT, lines[1])
	}
	// And jwcrypto verifies ours (the other direction).
	_, k := newEC(t, elliptic.P256())
	ours, _ := Sign(k, "GET", apiURL, "", "", time.Now())
	check := `
import sys, json
from jwcrypto import jwk, jws
tok = sys.argv[1]
s = jws.JWS()
s.deserialize(tok)
hdr = json.loads(s.objects["protected"])
s.verify(jwk.JWK(**hdr["jwk"]), alg="ES256")
print(hdr["typ"], jwk.JWK(**hdr["jwk"]).thumbprint())
`
	out, err = exec.Command(py, "-c", check, ours).CombinedOutput()
	if err != nil {
		t.Fatalf("jwcrypto refuses our proof: %v: %s", err, out)
	}
	want, _ := Thumbprint(k)
	if got := strings.TrimSpace(string(out)); got != "dpop+jwt "+want {
		t.Fatalf("jwcrypto read %q, want typ dpop+jwt and thumbprint %s", got, want)
	}
}

func BenchmarkVerify(b *testing.B) {
	_, k := newEC(b, elliptic.P256())
	now := time.Now()
	v := NewVerifier(Options{ReplayCapacity: b.N + 1, Now: func() time.Time { return now }})
	proofs := make([]string, b.N)
	for i := range proofs {
		p, err := Sign(k, "GET", apiURL, "tok", "", now)
		if err != nil {
			b.Fatal(err)
		}
		proofs[i] = p
	}
	req := Request{Method: "GET", URL: apiURL, AccessToken: "tok"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify(proofs[i], req); err != nil {
			b.Fatal(err)
		}
	}
}

// Check records nothing: a resource server calls Use only once the token is
// verified and bound to the proof's key, so proofs with a stranger's key and
// a junk token cannot fill the replay store.
func TestCheckThenUse(t *testing.T) {
	c := &clock{t0}
	v := verifier(c, Options{ReplayCapacity: 2})
	_, k := newEC(t, elliptic.P256())
	for range 5 { // more than the capacity: none is recorded
		p, _ := Sign(k, "GET", apiURL, "junk", "", c.now)
		if _, err := v.Check(p, Request{Method: "GET", URL: apiURL, AccessToken: "junk"}); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := Sign(k, "GET", apiURL, "the-token", "", c.now)
	pf, err := v.Check(p, Request{Method: "GET", URL: apiURL, AccessToken: "the-token"})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Use(pf); err != nil {
		t.Fatalf("the first use: %v (checks filled the store?)", err)
	}
	if err := v.Use(pf); err == nil {
		t.Fatal("a proof used twice")
	}
}
