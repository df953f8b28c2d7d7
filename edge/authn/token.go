// Package authn authenticates devices: it verifies access tokens from trusted
// issuers (RFC 9068 JWTs, and CWTs signed as COSE_Sign1: see cwt.go), maps
// client certificates to device records, and checks both against the local
// store (device state, revocations). Nothing here touches the network.
package authn

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/veraison/go-cose"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// Reason says why authentication failed, for logs, metrics and reason codes.
type Reason string

// Failure reasons.
const (
	ReasonOversized      Reason = "oversized"
	ReasonMalformed      Reason = "malformed"
	ReasonBadHeader      Reason = "bad_header"
	ReasonUnknownKey     Reason = "unknown_key"
	ReasonBadSignature   Reason = "bad_signature"
	ReasonWrongIssuer    Reason = "wrong_issuer"
	ReasonWrongAudience  Reason = "wrong_audience"
	ReasonExpired        Reason = "expired"
	ReasonNotYetValid    Reason = "not_yet_valid"
	ReasonBadClaims      Reason = "bad_claims"
	ReasonRevoked        Reason = "revoked"
	ReasonUnknownDevice  Reason = "unknown_device"
	ReasonDeviceInactive Reason = "device_inactive"
	ReasonPoPRequired    Reason = "pop_required"
	ReasonCnfMismatch    Reason = "cnf_mismatch"
	ReasonUnknownCert    Reason = "unknown_certificate"
	ReasonBadMethod      Reason = "bad_auth_method"
	ReasonNoCredentials  Reason = "no_credentials"
	ReasonClientID       Reason = "client_id_mismatch"
	ReasonWillDenied     Reason = "will_not_allowed"
	ReasonStore          Reason = "store_error"
)

// BadCredentials reports whether the failure is about the credential itself
// (answered 0x86 Bad User Name or Password) rather than about what a valid
// credential may do (0x87 Not authorized).
func (r Reason) BadCredentials() bool {
	switch r {
	case ReasonOversized, ReasonMalformed, ReasonBadHeader, ReasonUnknownKey, ReasonBadSignature,
		ReasonWrongIssuer, ReasonWrongAudience, ReasonExpired, ReasonNotYetValid, ReasonBadClaims,
		ReasonUnknownCert:
		return true
	}
	return false
}

// Error is an authentication failure. Detail never contains the credential.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Detail }

func fail(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf extracts the Reason of an authentication error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonStore
}

// Cnf is the RFC 7800 confirmation claim: the key the token is bound to.
type Cnf struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the holder's public key (base64url).
	JKT string `json:"jkt,omitempty"`
	// X5T is the RFC 8705 SHA-256 thumbprint of the holder's certificate (base64url).
	X5T string `json:"x5t#S256,omitempty"`
	// Kid names a symmetric key the holder shares with the gateway (RFC 7800
	// §3.4): the DTLS pre-shared key whose identity it is (RFC 9202).
	Kid string `json:"kid,omitempty"`
}

// Bound reports whether the token is bound to a key.
func (c Cnf) Bound() bool { return c.JKT != "" || c.X5T != "" || c.Kid != "" }

// Claims are the verified contents of an access token.
type Claims struct {
	Issuer string
	// Kid is the key that signed the token.
	Kid      string
	Subject  string
	ClientID string
	JTI      string
	Audience []string
	IssuedAt time.Time
	// NotBefore is zero when the token has no nbf.
	NotBefore time.Time
	Expiry    time.Time
	Scope     *policy.Set
	// ScopeValues are the token's scope values as given (topic scopes and
	// any others, such as a protected route's "heating:read").
	ScopeValues []string
	Cnf         Cnf
	// Permissions is a requesting party token's (RPT, UMA 2.0) permissions
	// claim: the shares it presents. The gateway honours each only as the
	// share it names stands in the store (shares.go).
	Permissions []Permission
}

// Permission is one entry of an RPT's permissions claim (UMA 2.0 Grant
// §3.3.5): a resource ("<device>/<group>"), its scopes, and the share
// (store.Grant id) that grants them. Other members (the share's conditions,
// for the client to read) are ignored: the store's record decides.
type Permission struct {
	ResourceID string   `json:"resource_id"`
	Scopes     []string `json:"resource_scopes"`
	Share      string   `json:"share"`
}

// maxPermissions bounds an RPT's permissions claim.
const maxPermissions = 256

// HasScope reports whether the token's scope holds value exactly.
func (c *Claims) HasScope(value string) bool {
	return c != nil && slices.Contains(c.ScopeValues, value)
}

// VerifierConfig tunes token verification.
type VerifierConfig struct {
	Audiences []string
	// Skew (auth.clock_skew) tolerates an issuer whose clock is ahead of
	// ours: a token is taken Skew before its nbf and with an iat up to Skew
	// in the future. It does not extend exp.
	Skew time.Duration
	// ExpLeeway (auth.exp_leeway, default 0) is how long past its exp a token
	// is still taken; a session on it ends then (Authenticator.ExpLeeway).
	ExpLeeway   time.Duration
	MaxLifetime time.Duration
	MaxSize     int
	CacheSize   int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type ringKey struct {
	issuer string
	alg    jwa.SignatureAlgorithm
	raw    any // the key exported (*ecdsa.PublicKey, ...), for jwsbb.Verify
	// coseAlg and cose verify CWTs; cose is nil for a key whose algorithm
	// has no accepted COSE form (RS256 and the other PKCS #1 v1.5 ones).
	coseAlg cose.Algorithm
	cose    cose.Verifier
}

// keyRing indexes trusted issuers' keys by kid. Several issuers may use the
// same kid; every candidate is tried and iss must name the key's own issuer.
type keyRing map[string][]ringKey

// Verifier checks JWT and CWT access tokens against the trusted issuers' keys
// and remembers verified tokens by hash, so a reconnect costs a hash, not a
// signature check.
type Verifier struct {
	cfg   VerifierConfig
	ring  atomic.Pointer[keyRing]
	cache *lru.Cache[[32]byte, *Claims]

	// reload, when set (SetReload), loads the trusted issuers from the
	// store again; lastReload (unix nanos) rate-limits it.
	reload     func() error
	reloadMu   sync.Mutex
	lastReload atomic.Int64
}

// reloadEvery bounds how often an unknown kid makes the verifier read the
// issuers from the store again: tokens with made-up kids cost one store
// read a second at most.
const reloadEvery = time.Second

// SetReload gives the verifier a way to load the trusted issuers again
// (the gateway's loadIssuers). A token whose kid no key has is checked once
// more after a reload: a store change that brought an issuer's new key and
// the first token signed with it arrive in either order (the gateway loads
// keys after the store has committed, and a device may connect between).
// Call before the verifier is used.
func (v *Verifier) SetReload(reload func() error) { v.reload = reload }

// reloadKeys reloads the issuers if ring is still the current key ring and
// the last reload was more than reloadEvery ago; it reports whether the
// ring changed since ring (by this reload or another).
func (v *Verifier) reloadKeys(ring *keyRing) bool {
	if v.reload == nil {
		return false
	}
	v.reloadMu.Lock()
	defer v.reloadMu.Unlock()
	if v.ring.Load() != ring {
		return true // someone else loaded newer keys meanwhile
	}
	now := time.Now().UnixNano()
	if now-v.lastReload.Load() < int64(reloadEvery) {
		return false
	}
	v.lastReload.Store(now)
	if err := v.reload(); err != nil {
		return false
	}
	return v.ring.Load() != ring
}

// NewVerifier returns a verifier that trusts no issuer until SetIssuers.
func NewVerifier(cfg VerifierConfig) *Verifier {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg}
	if cfg.CacheSize > 0 {
		v.cache, _ = lru.New[[32]byte, *Claims](cfg.CacheSize)
	}
	empty := keyRing{}
	v.ring.Store(&empty)
	return v
}

// SetIssuers replaces the trusted keys. Cached tokens are forgotten: a key
// that was removed must stop working at once.
func (v *Verifier) SetIssuers(issuers []store.Issuer) error {
	ring := keyRing{}
	for _, is := range issuers {
		set, err := store.ParseJWKS(is.JWKS)
		if err != nil {
			return fmt.Errorf("issuer %q: %w", is.Issuer, err)
		}
		for i := 0; i < set.Len(); i++ {
			k, _ := set.Key(i)
			kid, _ := k.KeyID()
			alg, _ := k.Algorithm()
			salg, ok := jwa.LookupSignatureAlgorithm(alg.String())
			if !ok {
				return fmt.Errorf("issuer %q key %q: unknown alg %q", is.Issuer, kid, alg)
			}
			var raw any
			if err := jwk.Export(k, &raw); err != nil {
				return fmt.Errorf("issuer %q key %q: %w", is.Issuer, kid, err)
			}
			coseAlg, coseVerifier := coseVerifierFor(salg, k)
			ring[kid] = append(ring[kid], ringKey{issuer: is.Issuer, alg: salg, raw: raw, coseAlg: coseAlg, cose: coseVerifier})
		}
	}
	v.ring.Store(&ring)
	v.Purge()
	return nil
}

// HasKey reports whether issuer's key kid is still trusted.
func (v *Verifier) HasKey(issuer, kid string) bool {
	for _, k := range (*v.ring.Load())[kid] {
		if k.issuer == issuer {
			return true
		}
	}
	return false
}

// Purge forgets every cached token.
func (v *Verifier) Purge() {
	if v.cache != nil {
		v.cache.Purge()
	}
}

// Forget drops cached tokens for which match is true and returns how many.
func (v *Verifier) Forget(match func(*Claims) bool) int {
	if v.cache == nil {
		return 0
	}
	n := 0
	for _, k := range v.cache.Keys() {
		if c, ok := v.cache.Peek(k); ok && match(c) {
			v.cache.Remove(k)
			n++
		}
	}
	return n
}

// CacheLen is the number of cached verified tokens.
func (v *Verifier) CacheLen() int {
	if v.cache == nil {
		return 0
	}
	return v.cache.Len()
}

// acceptedTyp: RFC 9068 access tokens carry typ at+jwt. A plain JWT (an ID
// token, say) must not be usable as an access token.
func acceptedTyp(t string) bool {
	t = strings.ToLower(t)
	return t == "at+jwt" || t == "application/at+jwt"
}

// Verify checks token, a compact JWS (JWT) or a CWT (COSE_Sign1, binary), and
// returns its claims. Signature, header and issuer/audience checks are done
// once per distinct token; time checks on every call. Revocation and device
// state are the caller's (see Authenticator).
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(token) > v.cfg.MaxSize {
		return nil, fail(ReasonOversized, "token is %d bytes, more than auth.max_token_size %d", len(token), v.cfg.MaxSize)
	}
	h := sha256.Sum256([]byte(token))
	if v.cache != nil {
		if c, ok := v.cache.Get(h); ok {
			if err := v.CheckTime(c); err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	ring := v.ring.Load()
	c, err := v.verify(ring, []byte(token))
	if ReasonOf(err) == ReasonUnknownKey && v.reloadKeys(ring) {
		ring = v.ring.Load()
		c, err = v.verify(ring, []byte(token))
	}
	if err != nil {
		return nil, err
	}
	if err := v.CheckTime(c); err != nil {
		return nil, err
	}
	if v.cache != nil {
		v.cache.Add(h, c)
		// SetIssuers may have purged the cache while we verified with the old
		// keys: never leave behind a token verified by a key no longer trusted.
		if v.ring.Load() != ring {
			v.cache.Remove(h)
		}
	}
	return c, nil
}

// CheckTime refuses a token that has expired (at exp plus ExpLeeway) or is
// not valid yet (nbf or iat more than Skew ahead).
func (v *Verifier) CheckTime(c *Claims) error {
	now := v.cfg.Now()
	if !now.Before(c.Expiry.Add(v.cfg.ExpLeeway)) {
		return fail(ReasonExpired, "token expired at %s", c.Expiry.UTC().Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Add(v.cfg.Skew).Before(c.NotBefore) {
		return fail(ReasonNotYetValid, "token not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.Add(v.cfg.Skew).Before(c.IssuedAt) {
		return fail(ReasonNotYetValid, "token issued in the future (iat %s)", c.IssuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// verify dispatches on the token's format: a compact JWS is ASCII, so a token
// whose first byte is 0x80 or above is CBOR and taken for a CWT (COSE_Sign1
// starts 0x84 untagged, 0xd2 with tag 18, 0xd8 0x3d with tag 61).
func (v *Verifier) verify(ring *keyRing, raw []byte) (*Claims, error) {
	if isCBOR(raw) {
		return v.verifyCWT(ring, raw)
	}
	return v.verifyJWT(ring, raw)
}

func (v *Verifier) verifyJWT(ring *keyRing, raw []byte) (*Claims, error) {
	// Before any JSON or crypto: one signed token has one byte form, so a
	// variant (a line break, padding, another alphabet) is neither a second
	// cache entry nor a second signature check (strict.go).
	seg, ferr := compactSegments(raw)
	if ferr != nil {
		return nil, ferr
	}
	header, err := decodeSegment(seg[0])
	if err != nil {
		return nil, fail(ReasonMalformed, "header is not base64url: %v", err)
	}
	if p := scanJSON(header, false); p != nil {
		switch {
		case p.twice && !p.nested:
			return nil, fail(ReasonBadHeader, "header parameter %q appears twice (RFC 7515 §4: names must be unique)", p.dup)
		case p.twice:
			return nil, fail(ReasonBadHeader, "member %q appears twice in header parameter %q", p.dup, p.in)
		}
		return nil, fail(ReasonMalformed, "header is not a JSON object: %s", p.syntax)
	}
	// One parse of the header and one signature check, with jwx's building
	// blocks (jwsbb): jws.Parse, jws.Verify and jwt.Parse parsed the token
	// three times, 28 KB of garbage and most of a connect's allocations.
	hdr := jwsbb.HeaderParse(header)
	alg, err := jwsbb.HeaderGetString(hdr, "alg")
	if err != nil {
		if jwsbb.HeaderHas(hdr, "alg") {
			return nil, fail(ReasonBadHeader, "alg in header is not a string")
		}
		return nil, fail(ReasonBadHeader, "no alg in header")
	}
	if alg == jwa.NoSignature().String() || strings.HasPrefix(alg, "HS") {
		return nil, fail(ReasonBadHeader, "alg %q is not accepted (asymmetric signatures only)", alg)
	}
	if jwsbb.HeaderHas(hdr, "crit") {
		crit, _ := jwsbb.HeaderGetStringArray(hdr, "crit")
		return nil, fail(ReasonBadHeader, "header lists critical extensions %v, none are supported", crit)
	}
	// RFC 7797's unencoded payload is a critical extension; b64 without crit
	// is not a token anyone meant.
	if jwsbb.HeaderHas(hdr, "b64") {
		if b64, err := jwsbb.HeaderGetBool(hdr, "b64"); err != nil || !b64 {
			return nil, fail(ReasonBadHeader, "header parameter b64 other than true is not supported (RFC 7797 unencoded payloads)")
		}
	}
	typ, _ := jwsbb.HeaderGetString(hdr, "typ")
	if !acceptedTyp(typ) {
		return nil, fail(ReasonBadHeader, "typ %q is not at+jwt (RFC 9068 access tokens only)", typ)
	}
	kid, _ := jwsbb.HeaderGetString(hdr, "kid")
	if kid == "" {
		return nil, fail(ReasonBadHeader, "no kid in header")
	}
	cands := (*ring)[kid]
	if len(cands) == 0 {
		return nil, fail(ReasonUnknownKey, "kid %q is not a key of any trusted issuer", kid)
	}
	sig, err := decodeSegment(seg[2])
	if err != nil {
		return nil, fail(ReasonMalformed, "signature is not base64url: %v", err)
	}
	signingInput := raw[:len(seg[0])+1+len(seg[1])]
	var signer *ringKey
	algMatched := false
	for i := range cands {
		k := &cands[i]
		// The key decides the algorithm; a header that names another one is
		// an attack (RS256 key used as HS256 secret) or a mistake.
		if k.alg.String() != alg {
			continue
		}
		algMatched = true
		if jwsbb.Verify(k.raw, alg, signingInput, sig) == nil {
			signer = k
			break
		}
	}
	if signer == nil {
		if !algMatched {
			return nil, fail(ReasonBadHeader, "alg %q does not match key %q's algorithm", alg, kid)
		}
		return nil, fail(ReasonBadSignature, "signature does not verify with key %q", kid)
	}
	// The signature is good; what fails from here is the claims themselves.
	payload, err := decodeSegment(seg[1])
	if err != nil {
		return nil, fail(ReasonBadClaims, "payload is not base64url: %v", err)
	}
	if p := scanJSON(payload, true); p != nil {
		switch {
		case p.twice && !p.nested:
			return nil, fail(ReasonBadClaims, "claim %q appears twice (RFC 7519 §4: claim names must be unique)", p.dup)
		case p.twice:
			return nil, fail(ReasonBadClaims, "member %q appears twice in claim %q", p.dup, p.in)
		case p.date != "":
			return nil, fail(ReasonBadClaims, "%s is %s, not a NumericDate (RFC 7519 §2: a JSON number of seconds since 1970)", p.date, p.got)
		}
		return nil, fail(ReasonBadClaims, "claims are not a JSON object: %s", p.syntax)
	}
	var jc jwtClaims
	if err := json.Unmarshal(payload, &jc); err != nil {
		return nil, fail(ReasonBadClaims, "claims: %v", err)
	}

	p := &parsedClaims{format: jwtFormat}
	p.Kid = kid
	p.Issuer, p.Subject, p.JTI = jc.Issuer, jc.Subject, jc.JTI
	p.Audience = []string(jc.Audience)
	p.Expiry, p.hasExp = jc.Expiry.t, jc.Expiry.set
	p.IssuedAt, p.hasIat = jc.IssuedAt.t, jc.IssuedAt.set
	p.NotBefore = jc.NotBefore.t
	_ = json.Unmarshal(jc.ClientID, &p.ClientID) // not a string: missing, below
	if jc.Scope != nil {
		if err := json.Unmarshal(jc.Scope, &p.scope); err != nil {
			p.scopeErr = fail(ReasonBadClaims, "scope is not a string")
		}
	}
	if jc.Cnf != nil {
		p.hasCnf = true
		if err := json.Unmarshal(jc.Cnf, &p.Cnf); err != nil {
			p.cnfErr = fail(ReasonBadClaims, "cnf is not an object with jkt, x5t#S256 or kid")
		}
	}
	if jc.Permissions != nil {
		if err := json.Unmarshal(jc.Permissions, &p.Permissions); err != nil {
			p.permErr = fail(ReasonBadClaims, "permissions is not an array of objects with resource_id, resource_scopes and share (UMA 2.0 Grant §3.3.5)")
		} else if p.Permissions == nil {
			p.Permissions = []Permission{}
		}
	}
	return v.checkClaims(p, signer)
}

// jwtClaims are the members of a JWT claims set the gateway reads; the
// registered ones typed as RFC 7519 has them, the others kept raw so that a
// wrong type is refused where checkClaims reaches it.
type jwtClaims struct {
	Issuer      string          `json:"iss"`
	Audience    audience        `json:"aud"`
	Subject     string          `json:"sub"`
	JTI         string          `json:"jti"`
	Expiry      jwtDate         `json:"exp"`
	IssuedAt    jwtDate         `json:"iat"`
	NotBefore   jwtDate         `json:"nbf"`
	ClientID    json.RawMessage `json:"client_id"`
	Scope       json.RawMessage `json:"scope"`
	Cnf         json.RawMessage `json:"cnf"`
	Permissions json.RawMessage `json:"permissions"`
}

// audience is aud: one string or an array of strings (RFC 7519 §4.1.3).
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// jwtDate is a NumericDate claim (RFC 7519 §2), kept to the second as
// jwx keeps it; scanJSON has already refused one that is not a number.
type jwtDate struct {
	t   time.Time
	set bool
}

func (d *jwtDate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(b), 64)
		if ferr != nil || math.IsNaN(f) || f < math.MinInt64 || f >= math.MaxInt64 {
			return fmt.Errorf("%s is not a NumericDate", b)
		}
		n = int64(math.Trunc(f))
	}
	d.t, d.set = time.Unix(n, 0).UTC(), true
	return nil
}

// tokenFormat names what differs between the formats in checkClaims' refusals.
type tokenFormat struct {
	jti        string // the token id claim
	requiredBy string // why the required claims are required
	cnfMembers string // the confirmation methods understood
}

var (
	jwtFormat = tokenFormat{jti: "jti", requiredBy: "RFC 9068", cnfMembers: "jkt, x5t#S256 or kid"}
	cwtFormat = tokenFormat{jti: "cti", requiredBy: "as for RFC 9068 JWTs", cnfMembers: "COSE_Key or kid"}
)

// parsedClaims are the claims a format's parser read from a token whose
// signature is good, before the checks both formats share (checkClaims).
type parsedClaims struct {
	Claims
	format         tokenFormat
	hasExp, hasIat bool
	hasCnf         bool
	scope          string
	// scopeErr and cnfErr hold a claim of the wrong type until checkClaims
	// reaches it, so that both formats refuse in the same order.
	scopeErr, cnfErr, permErr *Error
}

// checkClaims applies to the claims of a token that signer's key has signed
// the rules that do not depend on the format: issuer, audience, required
// claims, lifetime, scope and confirmation. Times against the clock are
// CheckTime's, on every use.
func (v *Verifier) checkClaims(p *parsedClaims, signer *ringKey) (*Claims, error) {
	c := p.Claims
	if c.Issuer != signer.issuer {
		return nil, fail(ReasonWrongIssuer, "iss %q is not the issuer of key %q", c.Issuer, c.Kid)
	}
	if !slices.ContainsFunc(c.Audience, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return nil, fail(ReasonWrongAudience, "aud %q does not name this gateway (auth.audiences %q)", c.Audience, v.cfg.Audiences)
	}
	var missing []string
	for name, present := range map[string]bool{"sub": c.Subject != "", p.format.jti: c.JTI != "", "exp": p.hasExp, "iat": p.hasIat, "client_id": c.ClientID != ""} {
		if !present {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fail(ReasonBadClaims, "required claims missing: %s (%s)", strings.Join(missing, ", "), p.format.requiredBy)
	}
	if life := c.Expiry.Sub(c.IssuedAt); life > v.cfg.MaxLifetime {
		return nil, fail(ReasonBadClaims, "lifetime %s is longer than auth.max_token_lifetime %s", life, v.cfg.MaxLifetime)
	}
	if p.scopeErr != nil {
		return nil, p.scopeErr
	}
	rules, err := policy.ParseScope(p.scope)
	if err != nil {
		return nil, fail(ReasonBadClaims, "scope: %v", err)
	}
	if c.Scope, err = policy.Compile(rules); err != nil {
		return nil, fail(ReasonBadClaims, "scope: %v", err)
	}
	c.ScopeValues = strings.Fields(p.scope)
	if p.permErr != nil {
		return nil, p.permErr
	}
	if err := checkPermissions(c.Permissions); err != nil {
		return nil, err
	}
	if p.hasCnf {
		if p.cnfErr != nil {
			return nil, p.cnfErr
		}
		if !c.Cnf.Bound() {
			return nil, fail(ReasonBadClaims, "cnf names no supported key (%s)", p.format.cnfMembers)
		}
	}
	return &c, nil
}

// MarshalJSON keeps Claims out of logs by accident only as what they are:
// never the token, just the identifying claims.
func (c *Claims) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"iss": c.Issuer, "sub": c.Subject, "client_id": c.ClientID, "jti": c.JTI, "exp": c.Expiry})
}

// checkPermissions validates an RPT's permissions claim.
func checkPermissions(ps []Permission) error {
	if len(ps) > maxPermissions {
		return fail(ReasonBadClaims, "permissions has %d entries, more than %d", len(ps), maxPermissions)
	}
	for i, p := range ps {
		if _, _, ok := store.ParseResourceID(p.ResourceID); !ok {
			return fail(ReasonBadClaims, "permissions[%d].resource_id %q is not <device>/<group>", i, p.ResourceID)
		}
		if p.Share == "" {
			return fail(ReasonBadClaims, "permissions[%d].share is missing (the share that grants the resource)", i)
		}
		if len(p.Scopes) == 0 {
			return fail(ReasonBadClaims, "permissions[%d].resource_scopes is empty", i)
		}
		for _, sc := range p.Scopes {
			if sc != store.ScopeSub && sc != store.ScopePub {
				return fail(ReasonBadClaims, "permissions[%d].resource_scopes: %q is not one of sub, pub", i, sc)
			}
		}
	}
	return nil
}
