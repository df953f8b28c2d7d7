package authn

// Strict reading of a compact JWS before jwx sees it. jwx is lenient where a
// verifier must not be: it decodes segments holding line breaks, padding or
// the standard base64 alphabet, takes the last of two members with one name,
// and reads a NumericDate from a JSON string. Each of those lets one signed
// token take many byte forms (each a new cache entry and a full signature
// check) or say two things at once (one to whoever reads the first member,
// another to whoever reads the last). So, on a cache miss only:
//
//   - compactSegments refuses any byte but base64url and the two dots, and
//     segments whose length or trailing bits no encoder produces, before any
//     JSON or crypto (RFC 7515 §2, §7.1: unpadded base64url);
//   - scanJSON refuses a header or claims set with a duplicate member name at
//     any depth (RFC 7515 §4, RFC 7519 §4 allow a parser to reject them; this
//     one does), invalid UTF-8, or JSON that is not one object, and for the
//     claims set, an exp, nbf or iat that is not a JSON number within
//     0..9999-12-31 (RFC 7519 §2 NumericDate).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// b64url marks the bytes of the base64url alphabet (RFC 4648 §5).
var b64url = func() (t [256]bool) {
	for _, r := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[r] = true
	}
	return t
}()

// b64urlValue is the 6-bit value of a base64url byte.
func b64urlValue(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c - 'A'
	case c >= 'a' && c <= 'z':
		return c - 'a' + 26
	case c >= '0' && c <= '9':
		return c - '0' + 52
	case c == '-':
		return 62
	}
	return 63 // '_'
}

// describeByte names a byte that has no place in a compact JWS, for a refusal.
func describeByte(c byte) string {
	switch c {
	case '\r':
		return "a carriage return (CR)"
	case '\n':
		return "a line feed (LF)"
	case ' ', '\t':
		return "whitespace"
	case '=':
		return "base64 padding '='"
	case '+', '/':
		return fmt.Sprintf("%q of the standard base64 alphabet (base64url has - and _)", c)
	}
	if c >= 0x21 && c < 0x7f {
		return fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

var b64Strict = base64.RawURLEncoding.Strict()

// decodeSegment decodes a segment that compactSegments has checked.
func decodeSegment(s []byte) ([]byte, error) {
	dst := make([]byte, base64.RawURLEncoding.DecodedLen(len(s)))
	n, err := b64Strict.Decode(dst, s)
	return dst[:n], err
}

var segmentNames = [3]string{"header", "payload", "signature"}

// compactSegments checks that raw is a compact JWS in its one canonical byte
// form and returns its three segments, still encoded. A non-empty header and
// payload are required; an empty signature is left to the header checks
// (alg none).
func compactSegments(raw []byte) (seg [3][]byte, err *Error) {
	n, start := 0, 0
	for i, c := range raw {
		if b64url[c] {
			continue
		}
		if c != '.' {
			return seg, fail(ReasonMalformed, "%s at offset %d: a compact JWS is unpadded base64url segments and two dots, nothing else (RFC 7515 §7.1)", describeByte(c), i)
		}
		if n == 2 {
			return seg, fail(ReasonMalformed, "not a compact JWS (want header.payload.signature)")
		}
		seg[n] = raw[start:i]
		n++
		start = i + 1
	}
	if n != 2 {
		return seg, fail(ReasonMalformed, "not a compact JWS (want header.payload.signature)")
	}
	seg[2] = raw[start:]
	for i, s := range seg {
		if len(s) == 0 && i < 2 {
			return seg, fail(ReasonMalformed, "the %s segment is empty", segmentNames[i])
		}
		// An encoder leaves no 1-char group and zero bits after the last
		// byte; a decoder that ignores them gives one token many forms.
		switch len(s) % 4 {
		case 1:
			return seg, fail(ReasonMalformed, "the %s segment has a length (%d) no base64url encoding has", segmentNames[i], len(s))
		case 2:
			if b64urlValue(s[len(s)-1])&0x0f != 0 {
				return seg, fail(ReasonMalformed, "the %s segment's last character has bits set beyond the data (not canonical base64url)", segmentNames[i])
			}
		case 3:
			if b64urlValue(s[len(s)-1])&0x03 != 0 {
				return seg, fail(ReasonMalformed, "the %s segment's last character has bits set beyond the data (not canonical base64url)", segmentNames[i])
			}
		}
	}
	return seg, nil
}

// maxJSONDepth bounds the nesting scanJSON follows; a header or claims set
// has two or three levels.
const maxJSONDepth = 32

// smallObject is how many member names an object may have before scanJSON
// looks duplicates up in a map rather than comparing with each.
const smallObject = 16

// jsonProblem is what scanJSON found wrong, for the caller to word as a
// header or a claims refusal.
type jsonProblem struct {
	// twice is set when a member name appears twice in one object: dup is
	// that name and, when nested, in the top-level member it is inside.
	twice, nested bool
	dup, in       string
	// date names a top-level NumericDate member whose value is not one, and
	// got says what it is instead.
	date, got string
	// syntax is set when the text is not one JSON object in UTF-8.
	syntax string
}

// scanner walks JSON text once, without building values.
type scanner struct {
	b     []byte
	i     int
	names [][]byte // member names of the objects being read, innermost last
	dates bool     // check the top-level NumericDate members
	p     *jsonProblem
}

// scanJSON checks that b is one JSON object in UTF-8 with no member name
// twice in any object; with dates, that its exp, nbf and iat are NumericDates.
// It returns nil when all is well.
func scanJSON(b []byte, dates bool) *jsonProblem {
	if !utf8.Valid(b) {
		return &jsonProblem{syntax: "not UTF-8"}
	}
	s := &scanner{b: b, dates: dates, names: make([][]byte, 0, smallObject)}
	s.ws()
	if s.i >= len(b) || b[s.i] != '{' {
		return &jsonProblem{syntax: "not a JSON object"}
	}
	if !s.value(0, nil) {
		return s.p
	}
	s.ws()
	if s.i != len(b) {
		return &jsonProblem{syntax: "data after the JSON object"}
	}
	return nil
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next reads what follows a member or element: a comma (end false) or the
// closing bracket (end true); anything else is refused (ok false).
func (s *scanner) next(closing byte) (end, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return false, s.bad("unexpected end")
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		return false, true
	case closing:
		s.i++
		return true, true
	}
	return false, s.bad("want , or " + string(closing))
}

func (s *scanner) bad(what string) bool {
	if s.p == nil {
		s.p = &jsonProblem{syntax: fmt.Sprintf("%s at offset %d", what, s.i)}
	}
	return false
}

// value reads one JSON value at depth; in names the member it is the value of.
func (s *scanner) value(depth int, in []byte) bool {
	if depth > maxJSONDepth {
		return s.bad("nested too deeply")
	}
	s.ws()
	if s.i >= len(s.b) {
		return s.bad("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth, in)
	case c == '[':
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return true
		}
		for {
			if !s.value(depth+1, in) {
				return false
			}
			if end, ok := s.next(']'); !ok || end {
				return ok
			}
		}
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		_, ok := s.number()
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.bad("not a JSON value")
}

func (s *scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return s.bad("not a JSON value")
	}
	s.i += len(lit)
	return true
}

// str reads a string and returns its raw contents (between the quotes) and
// whether they hold an escape.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], escaped, true
		case c == '\\':
			escaped = true
			j++
			if j >= len(s.b) {
				break
			}
			switch s.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s.b) {
					s.i = j
					return nil, false, s.bad("bad \\u escape")
				}
				for _, h := range s.b[j+1 : j+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						s.i = j
						return nil, false, s.bad("bad \\u escape")
					}
				}
				j += 4
			default:
				s.i = j
				return nil, false, s.bad("bad escape")
			}
		case c < 0x20:
			s.i = j
			return nil, false, s.bad("control character in a string")
		}
	}
	s.i = len(s.b)
	return nil, false, s.bad("unterminated string")
}

// number reads a JSON number (RFC 8259 §6) and returns its text.
func (s *scanner) number() ([]byte, bool) {
	b, j := s.b, s.i
	digits := func() bool {
		k := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j > k
	}
	if b[j] == '-' {
		j++
	}
	if j < len(b) && b[j] == '0' {
		j++
	} else if !digits() {
		s.i = j
		return nil, s.bad("bad number")
	}
	if j < len(b) && b[j] == '.' {
		j++
		if !digits() {
			s.i = j
			return nil, s.bad("bad number")
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if !digits() {
			s.i = j
			return nil, s.bad("bad number")
		}
	}
	num := b[s.i:j]
	s.i = j
	return num, true
}

// memberName is a member name as a JSON decoder reads it: escapes resolved
// (so that "exp" and "\u0065xp" are one name), as encoding/json does.
func memberName(raw []byte, escaped bool) []byte {
	if !escaped {
		return raw
	}
	var name string
	quoted := make([]byte, 0, len(raw)+2)
	quoted = append(append(append(quoted, '"'), raw...), '"')
	if json.Unmarshal(quoted, &name) != nil {
		return raw
	}
	return []byte(name)
}

func (s *scanner) object(depth int, in []byte) bool {
	s.i++ // '{'
	base := len(s.names)
	defer func() { s.names = s.names[:base] }()
	var seen map[string]struct{}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.bad("want a member name")
		}
		raw, escaped, ok := s.str()
		if !ok {
			return false
		}
		name := memberName(raw, escaped)
		dup := false
		if seen != nil {
			_, dup = seen[string(name)]
			seen[string(name)] = struct{}{}
		} else {
			for _, n := range s.names[base:] {
				if bytes.Equal(n, name) {
					dup = true
					break
				}
			}
			s.names = append(s.names, name)
			if len(s.names)-base > smallObject {
				seen = make(map[string]struct{}, 2*smallObject)
				for _, n := range s.names[base:] {
					seen[string(n)] = struct{}{}
				}
			}
		}
		if dup {
			s.p = &jsonProblem{twice: true, nested: depth > 0, dup: shortName(name), in: shortName(in)}
			return false
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.bad("want :")
		}
		s.i++
		s.ws()
		if depth == 0 && s.dates && isDateClaim(name) {
			if !s.date(string(name)) {
				return false
			}
		} else {
			inner := in
			if depth == 0 {
				inner = name
			}
			if !s.value(depth+1, inner) {
				return false
			}
		}
		if end, ok := s.next('}'); !ok || end {
			return ok
		}
	}
}

// shortName is a member name for a refusal's detail: names come from the
// token, so a long one is cut (by bytes; %q shows what is left).
func shortName(name []byte) string {
	const max = 40
	if len(name) > max {
		return string(name[:max]) + "..."
	}
	return string(name)
}

func isDateClaim(name []byte) bool {
	return string(name) == "exp" || string(name) == "nbf" || string(name) == "iat"
}

// date reads the value of a NumericDate claim: a JSON number of seconds from
// 1970 up to the year 9999, as the CWT path insists (numericDate).
func (s *scanner) date(name string) bool {
	if s.i >= len(s.b) {
		return s.bad("unexpected end")
	}
	got := ""
	switch c := s.b[s.i]; {
	case c == '-' || (c >= '0' && c <= '9'):
		num, ok := s.number()
		if !ok {
			return false
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err == nil && f >= 0 && f <= maxNumericDate {
			return true
		}
		got = "a number outside 0..253402300799 (year 9999)"
	case c == '"':
		got = "a JSON string"
	case c == '{':
		got = "an object"
	case c == '[':
		got = "an array"
	case c == 't' || c == 'f':
		got = "a boolean"
	case c == 'n':
		got = "null"
	default:
		return s.bad("not a JSON value")
	}
	s.p = &jsonProblem{date: name, got: got}
	return false
}
