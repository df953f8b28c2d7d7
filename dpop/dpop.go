// Package dpop verifies and makes OAuth 2.0 DPoP proofs (RFC 9449): a JWT
// signed by the client's key, sent in the DPoP header, that binds one HTTP
// request (method and URL, and the access token when one is presented) to
// that key. It imports only jwx and the standard library.
//
// A Verifier keeps the ids of the proofs it accepted for as long as they
// could be accepted again (replay), in its own memory or in a ReplayStore
// it is given, and, when asked, hands out and checks stateless server
// nonces (§8).
package dpop

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Error codes (RFC 9449 §7.1, §8).
const (
	CodeInvalidProof = "invalid_dpop_proof"
	CodeUseNonce     = "use_dpop_nonce"
)

// MaxProofSize caps a DPoP header value: a proof with a P-384 or Ed25519
// key, a long URL and an access token hash is well under 2 KiB.
const MaxProofSize = 8 << 10

// maxJTI caps the jti kept for replay detection (RFC 9449 asks for at least
// 96 bits of randomness: 16 base64url characters).
const maxJTI = 256

// Options configure a Verifier.
type Options struct {
	// MaxAge is how far iat may be in the past (default 60s).
	MaxAge time.Duration
	// Skew is how far iat may be in the future (default 5s).
	Skew time.Duration
	// Nonce requires a server nonce (DPoP-Nonce). Nonces are stateless: an
	// HMAC of a time step (of MaxAge) with NonceKey; a nonce is valid in its
	// step and the next.
	Nonce bool
	// NonceKey is the HMAC key for nonces; random 32 bytes when nil.
	NonceKey []byte
	// ReplayCapacity is how many proof ids the Verifier keeps in memory
	// (default 100000). When full, new proofs are refused (fail closed): an
	// id is never forgotten while its proof could still be accepted (two
	// generations of MaxAge+Skew each). Unused with Replay.
	ReplayCapacity int
	// Replay, when set, keeps the proof ids instead of the Verifier's
	// memory. Servers that share their clients (replicas of one service
	// behind one URL) need one store for them all: a proof accepted by
	// one replica must be refused by every other, and each replica's
	// memory holds only what it saw itself. Nil (one process, such as a
	// gateway) keeps them in memory.
	Replay ReplayStore
	// Algs are the allowed "alg" values, default ES256, ES384, EdDSA. "none"
	// and the HMAC algorithms are never allowed, whatever this says.
	Algs []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ReplayStore keeps the ids of accepted proofs for a Verifier (see
// Options.Replay). It must be safe for concurrent use.
type ReplayStore interface {
	// Seen records id until until (after it, the proof can no longer pass
	// the iat check) and says whether it was recorded already: a replay.
	// id is the proof key's thumbprint and the proof's jti joined by a
	// NUL byte, at most a few hundred bytes of any value: a store with
	// limits on keys should keep it hashed. An error refuses the proof.
	Seen(id string, until time.Time) (replayed bool, err error)
}

// DefaultAlgs are the algorithms a Verifier accepts unless told otherwise.
var DefaultAlgs = []string{"ES256", "ES384", "EdDSA"}

// Verifier checks DPoP proofs. It is safe for concurrent use.
type Verifier struct {
	o     Options
	algs  map[string]bool
	gen   time.Duration // one replay generation: MaxAge+Skew
	nstep int64         // nonce time step in nanoseconds (MaxAge)

	mu        sync.Mutex
	start     time.Time
	cur, prev map[string]struct{} // jkt + "\x00" + jti
}

// NewVerifier makes a Verifier; zero options take their defaults.
func NewVerifier(o Options) *Verifier {
	if o.MaxAge <= 0 {
		o.MaxAge = 60 * time.Second
	}
	if o.Skew <= 0 {
		o.Skew = 5 * time.Second
	}
	if o.ReplayCapacity <= 0 {
		o.ReplayCapacity = 100000
	}
	if len(o.Algs) == 0 {
		o.Algs = DefaultAlgs
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NonceKey == nil {
		o.NonceKey = make([]byte, 32)
		if _, err := rand.Read(o.NonceKey); err != nil {
			panic("dpop: no randomness for the nonce key: " + err.Error())
		}
	}
	v := &Verifier{o: o, algs: map[string]bool{}, gen: o.MaxAge + o.Skew, nstep: int64(o.MaxAge)}
	for _, a := range o.Algs {
		if _, ok := keyTypeFor(a); ok {
			v.algs[a] = true
		}
	}
	return v
}

// Request is what a proof must match.
type Request struct {
	// Method is the request's method; htm must be exactly this.
	Method string
	// URL is the request's URL as the client addressed it (the public URL,
	// not what a proxy forwarded). htu must equal it after normalisation
	// (RFC 3986 §6.2.2 and §6.2.3: scheme and host lowercased, default port
	// dropped, empty path "/", percent-encoding and dot segments
	// normalised), without query and fragment (RFC 9449 §4.3).
	URL string
	// AccessToken, when non-empty, is the token presented with the proof:
	// ath must be base64url(SHA-256(AccessToken)). When empty (the token
	// endpoint), ath must be absent.
	AccessToken string
}

// Proof is a verified proof.
type Proof struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof's key, base64url
	// without padding: what a bound token's cnf.jkt holds.
	JKT      string
	JTI      string
	IssuedAt time.Time
	// Key is the proof's public key.
	Key jwk.Key
}

// Error is Verify's error.
type Error struct {
	// Code is "invalid_dpop_proof", or "use_dpop_nonce" when the nonce is
	// missing or stale: answer with a fresh DPoP-Nonce header.
	Code string
	// Detail says what is wrong; it never holds the token.
	Detail string
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

func invalid(format string, args ...any) error {
	return &Error{Code: CodeInvalidProof, Detail: fmt.Sprintf(format, args...)}
}

// header is the proof's protected header. Members are read as raw JSON so
// that a wrong type is an error, not a silent zero.
type header struct {
	Typ  *string         `json:"typ"`
	Alg  *string         `json:"alg"`
	JWK  json.RawMessage `json:"jwk"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

type claims struct {
	JTI   *string         `json:"jti"`
	HTM   *string         `json:"htm"`
	HTU   *string         `json:"htu"`
	IAT   json.RawMessage `json:"iat"`
	ATH   *string         `json:"ath"`
	Nonce *string         `json:"nonce"`
}

// privateMembers are the JWK members that only a private or symmetric key
// has (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// Verify checks one DPoP header value (RFC 9449 §4.3): exactly one compact
// JWS, typ "dpop+jwt", an allowed asymmetric alg that matches the key, a
// public jwk header (a private key in it is refused), the signature, htm,
// htu, iat within MaxAge/Skew, ath, the nonce when Options.Nonce, and a jti
// never seen before (recorded only once everything else holds).
func (v *Verifier) Verify(proof string, r Request) (Proof, error) {
	p, err := v.Check(proof, r)
	if err != nil {
		return Proof{}, err
	}
	if err := v.Use(p); err != nil {
		return Proof{}, err
	}
	return p, nil
}

// Use records p's jti, refusing a proof seen before (or any when the replay
// store is full). A resource server calls it once the access token is
// verified and bound to p's key, so that a stranger's proofs (its own key,
// a junk token) cannot fill the store; Verify is Check then Use.
//
// A refusal is an *Error; a failure of Options.Replay is not (it wraps the
// store's error): the proof is refused all the same, and the caller can
// answer it as its own failure rather than the client's.
func (v *Verifier) Use(p Proof) error {
	now := v.o.Now()
	if v.o.Replay == nil {
		return v.use(p.JKT, p.JTI, now)
	}
	// A proof passes the iat check until iat+MaxAge, and iat is at most
	// Skew ahead of now: now+MaxAge+Skew covers it.
	replayed, err := v.o.Replay.Seen(p.JKT+"\x00"+p.JTI, now.Add(v.gen))
	if err != nil {
		return fmt.Errorf("dpop: replay store: %w", err)
	}
	if replayed {
		return invalid("jti already used (replayed proof)")
	}
	return nil
}

// Check is Verify without recording the jti: everything but the replay.
func (v *Verifier) Check(proof string, r Request) (Proof, error) {
	now := v.o.Now()
	if proof == "" {
		return Proof{}, invalid("no DPoP proof")
	}
	if len(proof) > MaxProofSize {
		return Proof{}, invalid("the proof is longer than %d bytes", MaxProofSize)
	}
	// Exactly one compact JWS: three base64url segments, nothing else (a
	// comma or space would be two header values folded into one).
	dots := 0
	for i := 0; i < len(proof); i++ {
		c := proof[i]
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return Proof{}, invalid("the proof is not one compact JWS (byte %q at %d)", c, i)
		}
	}
	if dots != 2 {
		return Proof{}, invalid("the proof is not one compact JWS (%d dots, want 2)", dots)
	}
	h64, rest, _ := strings.Cut(proof, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	if h64 == "" || p64 == "" || s64 == "" {
		return Proof{}, invalid("the proof has an empty header, payload or signature")
	}
	hb, err := base64.RawURLEncoding.Strict().DecodeString(h64)
	if err != nil {
		return Proof{}, invalid("header: not base64url")
	}
	var hdr header
	if err := strictUnmarshal(hb, &hdr); err != nil {
		return Proof{}, invalid("header: %v", err)
	}
	if hdr.Typ == nil || !strings.EqualFold(*hdr.Typ, "dpop+jwt") {
		return Proof{}, invalid(`typ must be "dpop+jwt"`)
	}
	if hdr.Alg == nil {
		return Proof{}, invalid("no alg")
	}
	alg := *hdr.Alg
	if !v.algs[alg] {
		return Proof{}, invalid("alg %q is not allowed (allowed: %s)", alg, strings.Join(v.allowed(), ", "))
	}
	if hdr.Crit != nil || hdr.B64 != nil {
		return Proof{}, invalid("crit and b64 are not supported in a DPoP proof")
	}
	if len(hdr.JWK) == 0 || hdr.JWK[0] != '{' {
		return Proof{}, invalid("no jwk header (the public key) or not a JSON object")
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(hdr.JWK, &members); err != nil {
		return Proof{}, invalid("jwk: %v", err)
	}
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			return Proof{}, invalid("the jwk header holds a private or symmetric key (member %q): it must be the public key only", m)
		}
	}
	key, err := jwk.ParseKey(hdr.JWK)
	if err != nil {
		return Proof{}, invalid("jwk: %v", err)
	}
	if priv, err := jwk.IsPrivateKey(key); err != nil || priv {
		return Proof{}, invalid("the jwk header must be an asymmetric public key")
	}
	if err := matchAlg(alg, key); err != nil {
		return Proof{}, err
	}
	jalg, ok := jwa.LookupSignatureAlgorithm(alg)
	if !ok {
		return Proof{}, invalid("alg %q unknown", alg)
	}
	payload, err := jws.VerifyCompactFast(key, []byte(proof), jalg)
	if err != nil {
		return Proof{}, invalid("signature does not verify with the jwk header's key")
	}
	var c claims
	if err := strictUnmarshal(payload, &c); err != nil {
		return Proof{}, invalid("claims: %v", err)
	}
	switch {
	case c.JTI == nil || *c.JTI == "":
		return Proof{}, invalid("no jti")
	case len(*c.JTI) > maxJTI:
		return Proof{}, invalid("jti longer than %d bytes", maxJTI)
	case c.HTM == nil:
		return Proof{}, invalid("no htm")
	case c.HTU == nil:
		return Proof{}, invalid("no htu")
	case len(c.IAT) == 0:
		return Proof{}, invalid("no iat")
	}
	if *c.HTM != r.Method {
		return Proof{}, invalid("htm %q is not the request's method %q", *c.HTM, r.Method)
	}
	want, err := NormalizeHTU(r.URL)
	if err != nil {
		return Proof{}, invalid("the request's URL: %v", err)
	}
	got, err := NormalizeHTU(*c.HTU)
	if err != nil {
		return Proof{}, invalid("htu: %v", err)
	}
	if got != want {
		return Proof{}, invalid("htu %q is not the request's URL %q", got, want)
	}
	iat, ok := numericDate(c.IAT)
	if !ok {
		return Proof{}, invalid("iat is not a NumericDate (a JSON number of seconds since 1970)")
	}
	if iat.Before(now.Add(-v.o.MaxAge)) {
		return Proof{}, invalid("iat %s is more than %s in the past", iat.UTC().Format(time.RFC3339), v.o.MaxAge)
	}
	if iat.After(now.Add(v.o.Skew)) {
		return Proof{}, invalid("iat %s is more than %s in the future", iat.UTC().Format(time.RFC3339), v.o.Skew)
	}
	if r.AccessToken != "" {
		if c.ATH == nil {
			return Proof{}, invalid("no ath: a proof sent with an access token must hold its hash")
		}
		sum := sha256.Sum256([]byte(r.AccessToken))
		if subtle.ConstantTimeCompare([]byte(*c.ATH), []byte(base64.RawURLEncoding.EncodeToString(sum[:]))) != 1 {
			return Proof{}, invalid("ath is not the hash of the access token sent")
		}
	} else if c.ATH != nil {
		return Proof{}, invalid("ath present but no access token is sent with this request")
	}
	if v.o.Nonce {
		if c.Nonce == nil || *c.Nonce == "" {
			return Proof{}, &Error{Code: CodeUseNonce, Detail: "a nonce is required: use the DPoP-Nonce header's value"}
		}
		if !v.nonceOK(*c.Nonce, now) {
			return Proof{}, &Error{Code: CodeUseNonce, Detail: "the nonce is stale or unknown: use the DPoP-Nonce header's value"}
		}
	}
	jkt, err := Thumbprint(key)
	if err != nil {
		return Proof{}, invalid("jwk: %v", err)
	}
	return Proof{JKT: jkt, JTI: *c.JTI, IssuedAt: iat, Key: key}, nil
}

// numericDate reads an RFC 7519 NumericDate: a JSON number (not a string).
func numericDate(raw json.RawMessage) (time.Time, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, false
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), true
}

func (v *Verifier) allowed() []string {
	var out []string
	for a := range v.algs {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// use records jti (of key jkt) as used; an error if it was already, or if
// the store is full. Ids live in two generations of MaxAge+Skew: an id is
// kept at least MaxAge+Skew after it was recorded, which is as long as a
// proof with that id could pass the iat check.
func (v *Verifier) use(jkt, jti string, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cur == nil || now.Sub(v.start) > v.gen {
		v.prev, v.cur, v.start = v.cur, map[string]struct{}{}, now
	}
	k := jkt + "\x00" + jti
	if _, ok := v.cur[k]; ok {
		return invalid("jti already used (replayed proof)")
	}
	if _, ok := v.prev[k]; ok {
		return invalid("jti already used (replayed proof)")
	}
	if len(v.cur)+len(v.prev) >= v.o.ReplayCapacity {
		return invalid("too many proofs in the last %s; try again later", 2*v.gen)
	}
	v.cur[k] = struct{}{}
	return nil
}

// Sweep forgets the proof ids that can no longer be replayed at now: the
// generations older than MaxAge+Skew. Use does the same as proofs come;
// Sweep is for a store that went quiet after a burst. It does nothing to
// an Options.Replay store: that is its owner's to sweep.
func (v *Verifier) Sweep(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch age := now.Sub(v.start); {
	case v.cur == nil:
	case age > 2*v.gen:
		v.prev, v.cur, v.start = nil, map[string]struct{}{}, now
	case age > v.gen:
		v.prev, v.cur, v.start = v.cur, map[string]struct{}{}, now
	}
}

// Held is how many proof ids the Verifier holds in memory for replay
// detection (0 with Options.Replay).
func (v *Verifier) Held() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.cur) + len(v.prev)
}

// Nonce is the nonce to send in DPoP-Nonce now ("" when Options.Nonce is
// off).
func (v *Verifier) Nonce() string {
	if !v.o.Nonce {
		return ""
	}
	return v.nonceAt(v.o.Now().UnixNano() / v.nstep)
}

func (v *Verifier) nonceAt(step int64) string {
	m := hmac.New(sha256.New, v.o.NonceKey)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(step))
	m.Write([]byte("edgeid dpop nonce\x00"))
	m.Write(b[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

func (v *Verifier) nonceOK(n string, now time.Time) bool {
	step := now.UnixNano() / v.nstep
	ok := subtle.ConstantTimeCompare([]byte(n), []byte(v.nonceAt(step)))
	ok |= subtle.ConstantTimeCompare([]byte(n), []byte(v.nonceAt(step-1)))
	return ok == 1
}

// keyTypeFor is the key type (and curve) alg needs; false for algorithms
// never allowed in a proof (none, HS*) or unknown ones.
func keyTypeFor(alg string) (string, bool) {
	switch alg {
	case "ES256":
		return "EC/P-256", true
	case "ES384":
		return "EC/P-384", true
	case "ES512":
		return "EC/P-521", true
	case "EdDSA":
		return "OKP/Ed25519", true
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return "RSA", true
	}
	return "", false
}

func matchAlg(alg string, key jwk.Key) error {
	want, _ := keyTypeFor(alg)
	have := key.KeyType().String()
	if crv, ok := curveOf(key); ok {
		have += "/" + crv
	}
	if have != want {
		return invalid("alg %s does not match the key (%s)", alg, have)
	}
	if have == "RSA" {
		var pk interface{ Size() int }
		var raw any
		if err := jwk.Export(key, &raw); err == nil {
			pk, _ = raw.(interface{ Size() int })
		}
		if pk == nil || pk.Size() < 256 {
			return invalid("RSA keys must have at least 2048 bits")
		}
	}
	return nil
}

func curveOf(key jwk.Key) (string, bool) {
	var crv jwa.EllipticCurveAlgorithm
	if err := key.Get("crv", &crv); err != nil {
		return "", false
	}
	return crv.String(), true
}

// NormalizeHTU is the form in which a proof's htu and a request's URL are
// compared (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2 and §6.2.3): an absolute
// http or https URL with scheme and host lowercased, the default port
// dropped, an empty path made "/", percent-encodings uppercased and
// unreserved characters decoded, dot segments removed, and no query or
// fragment.
func NormalizeHTU(s string) (string, error) {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", errors.New("not an absolute http or https URL")
	}
	if u.Opaque != "" || u.Host == "" {
		return "", errors.New("no host")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	p, err := normalizePath(u.EscapedPath())
	if err != nil {
		return "", err
	}
	user := ""
	if u.User != nil {
		user = u.User.String() + "@"
	}
	return scheme + "://" + user + host + p, nil
}

func normalizePath(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) || !ishex(p[i+1]) || !ishex(p[i+2]) {
			return "", errors.New("bad percent-encoding in the path")
		}
		c := unhex(p[i+1])<<4 | unhex(p[i+2])
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
		i += 2
	}
	return removeDotSegments(b.String()), nil
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(in string) string {
	if in == "" {
		return "/"
	}
	var out []string
	segs := strings.Split(in, "/")[1:]
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func ishex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func isUnreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// strictUnmarshal decodes one JSON object into v, refusing trailing data
// and duplicate members (two "alg"s must not mean one thing here and another
// elsewhere).
func strictUnmarshal(b []byte, v any) error {
	return strictDecode(json.NewDecoder(bytes.NewReader(b)), v)
}

func strictDecode(dec *json.Decoder, v any) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return errors.New("not JSON")
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	if err := noDuplicates(raw); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("not a JSON object of the expected members: %v", err)
	}
	return nil
}

// noDuplicates refuses a JSON object with a member name twice at its top
// level.
func noDuplicates(raw []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil { // name
			return err
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
		n++
	}
	if n != len(m) {
		return errors.New("a member appears twice")
	}
	return nil
}

// Sign makes a proof (for clients: the simulator, tests): typ dpop+jwt, jwk
// header = the public part of key, alg from the key (ES256 for P-256, ES384
// for P-384, EdDSA for Ed25519), claims jti (random), htm, htu, iat, ath
// when accessToken != "", nonce when != "".
func Sign(key jwk.Key, method, url, accessToken, nonce string, now time.Time) (string, error) {
	var alg jwa.SignatureAlgorithm
	crv, _ := curveOf(key)
	switch key.KeyType().String() + "/" + crv {
	case "EC/P-256":
		alg = jwa.ES256()
	case "EC/P-384":
		alg = jwa.ES384()
	case "OKP/Ed25519":
		alg = jwa.EdDSA()
	default:
		return "", fmt.Errorf("dpop: key type %s %s: use an EC P-256 or P-384 or an Ed25519 key", key.KeyType(), crv)
	}
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return "", fmt.Errorf("dpop: public key: %w", err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", err
	}
	c := struct {
		JTI   string `json:"jti"`
		HTM   string `json:"htm"`
		HTU   string `json:"htu"`
		IAT   int64  `json:"iat"`
		ATH   string `json:"ath,omitempty"`
		Nonce string `json:"nonce,omitempty"`
	}{JTI: base64.RawURLEncoding.EncodeToString(id), HTM: method, HTU: url, IAT: now.Unix(), Nonce: nonce}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c.ATH = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "dpop+jwt"); err != nil {
		return "", err
	}
	if err := h.Set(jws.JWKKey, pub); err != nil {
		return "", err
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", fmt.Errorf("dpop: sign: %w", err)
	}
	return string(out), nil
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of key's public part,
// base64url without padding.
func Thumbprint(key jwk.Key) (string, error) {
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return "", err
	}
	t, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(t), nil
}
