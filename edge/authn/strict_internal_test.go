package authn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// dupByDecoder is the reference: walk the text with encoding/json's tokens
// and report whether any object has a member name twice.
func dupByDecoder(b []byte) bool {
	var walk func(d *json.Decoder) bool
	walk = func(d *json.Decoder) bool {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for d.More() {
				k, _ := d.Token()
				name, _ := k.(string)
				if seen[name] {
					return true
				}
				seen[name] = true
				if walk(d) {
					return true
				}
			}
			_, _ = d.Token()
		case json.Delim('['):
			for d.More() {
				if walk(d) {
					return true
				}
			}
			_, _ = d.Token()
		}
		return false
	}
	return walk(json.NewDecoder(bytes.NewReader(b)))
}

// FuzzScanJSON holds scanJSON to encoding/json: on UTF-8 text, it finds a
// syntax problem whenever encoding/json reads no object (a duplicate met
// before the syntax error is a refusal too), none when it reads one, and
// then a duplicate exactly when a token walk does.
func FuzzScanJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":2}}`, `{"a":[{"b":1},{"b":1}]}`,
		`{"\u0061":1,"a":2}`, `{"a\ud800":1,"a\udfff":2}`, `{"exp":"1"}`, `{"a":1e5,"b":-0.5E-3}`,
		`{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, `{"a":tru}`, `{"a":1}x`, `[1]`, `{"a":"` + "\x01" + `"}`,
		` { "a" : [ true , false , null ] } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := scanJSON(b, false)
		if !utf8.Valid(b) {
			if p == nil || p.syntax == "" {
				t.Fatalf("%q: invalid UTF-8 not refused", b)
			}
			return
		}
		var obj map[string]json.RawMessage
		valid := json.Valid(b) && json.Unmarshal(b, &obj) == nil && obj != nil
		switch {
		case valid && p != nil && p.syntax != "":
			t.Fatalf("%q: encoding/json reads an object, scanJSON says %q", b, p.syntax)
		case !valid && p == nil:
			t.Fatalf("%q: encoding/json refuses it, scanJSON says %+v", b, p)
		case valid && dupByDecoder(b) != (p != nil && p.twice):
			t.Fatalf("%q: duplicate by encoding/json %v, by scanJSON %+v", b, dupByDecoder(b), p)
		}
	})
}

// BenchmarkStrictJWT is what the strict reading adds to a fresh JWT
// verification (a cache miss): the byte scan, two base64url decodes and two
// JSON scans of a typical token.
func BenchmarkStrictJWT(b *testing.B) {
	enc := base64.RawURLEncoding.EncodeToString
	tok := []byte(enc([]byte(`{"alg":"ES256","kid":"k1","typ":"at+jwt"}`)) + "." +
		enc([]byte(`{"aud":"edgeid","client_id":"thermo-1","exp":1796158766,"iat":1796155166,"iss":"https://issuer.test","jti":"eQz7bnwJf-B9hlCEyqrMNA","scope":"publish:devices/thermo-1/telemetry/# subscribe:devices/thermo-1/commands/#","sub":"alice"}`)) + "." +
		enc(make([]byte, 64)))
	b.ReportAllocs()
	for b.Loop() {
		seg, err := compactSegments(tok)
		if err != nil {
			b.Fatal(err)
		}
		h, _ := decodeSegment(seg[0])
		p, _ := decodeSegment(seg[1])
		if scanJSON(h, false) != nil || scanJSON(p, true) != nil {
			b.Fatal("refused")
		}
	}
}
