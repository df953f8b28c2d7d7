package authn

// CWT access tokens: RFC 8392 claims in a COSE_Sign1 (RFC 9052), held to the
// rules of the JWT path (token.go) wherever the formats allow.
//
// Envelope: tag 61 (CWT) around tag 18, tag 18 alone, or an untagged
// COSE_Sign1; nothing else (COSE_Mac0, COSE_Sign, COSE_Encrypt0, a bare
// claims map) is accepted. External AAD is empty.
//
// Headers: alg is required in the protected header and must be an asymmetric
// signature (ES256, ES384, ES512, EdDSA, PS256, PS384, PS512) and the
// algorithm of the trusted key; the key decides, as for JWTs. kid (label 4,
// a byte string holding the JWKS kid as UTF-8) is taken from the protected
// header, or from the unprotected one, which COSE allows: the signature binds
// the token to the key either way. crit is refused, and so is a content type
// other than application/cwt (61). A label in both headers is refused (RFC
// 9052 §3).
//
// Claims, by integer key (RFC 8392 §4): iss 1, sub 2, aud 3 (text or array of
// text), exp 4, nbf 5, iat 6 (integer or floating-point NumericDate), cti 7
// (byte string; Claims.JTI is its unpadded base64url, which is what a
// revocation by jti must name), cnf 8 (RFC 8747: COSE_Key 1 or kid 3) and
// scope 9 (text, or a byte string holding text, RFC 9200 §5.8.1). client_id
// has no CWT claim key in RFC 8392 or RFC 9200, so it is read under its JWT
// name, the text key "client_id"; a text "jti" is accepted in place of cti.
// The registered claims are read under their integer keys only: a text key
// "iss" is an unknown claim, and unknown claims are ignored, as for JWTs.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/veraison/go-cose"
)

// COSE header labels (RFC 9052 §3.1), CWT claim keys (RFC 8392 §4, RFC 8747
// §3.1, RFC 9200 §5.8.1) and COSE_Key parameters (RFC 9053 §7).
const (
	hdrAlg         int64 = 1
	hdrCrit        int64 = 2
	hdrContentType int64 = 3
	hdrKid         int64 = 4
	hdrTyp         int64 = 16 // RFC 9596

	claimIss   int64 = 1
	claimSub   int64 = 2
	claimAud   int64 = 3
	claimExp   int64 = 4
	claimNbf   int64 = 5
	claimIat   int64 = 6
	claimCti   int64 = 7
	claimCnf   int64 = 8
	claimScope int64 = 9

	cnfCOSEKey int64 = 1
	cnfKid     int64 = 3

	keyKty     int64 = 1
	keyKid     int64 = 2
	keyAlg     int64 = 3
	keyOps     int64 = 4
	keyCrv     int64 = -1
	keyX       int64 = -2
	keyY       int64 = -3
	ktyOKP     int64 = 1
	ktyEC2     int64 = 2
	crvP256    int64 = 1
	crvEd25519 int64 = 6

	// cwtContentType is the CoAP content format of application/cwt.
	cwtContentType int64 = 61
)

// Tag heads: 0xd8 0x3d is tag 61 (CWT), 0xd2 tag 18 (COSE_Sign1), 0x84 a
// four-element array (an untagged COSE_Sign1).
var (
	headCWT   = []byte{0xd8, 0x3d}
	headSign1 = []byte{0xd2}
	headArray = []byte{0x84}
)

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are not dates a token
// means, and time arithmetic on them overflows.
const maxNumericDate = 253402300799

// cwtDecMode decodes the claims: duplicate keys are refused (two values for
// one claim is an attack on whoever reads the other one), and so are tags
// (RFC 8392 §2: a NumericDate is untagged) and indefinite lengths, as in the
// COSE envelope.
var cwtDecMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:       cbor.DupMapKeyEnforcedAPF,
		IndefLength:     cbor.IndefLengthForbidden,
		TagsMd:          cbor.TagsForbidden,
		IntDec:          cbor.IntDecConvertSignedOrFail,
		MaxNestedLevels: 16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// isCBOR reports whether a token is binary: a compact JWS is ASCII.
func isCBOR(raw []byte) bool { return len(raw) > 0 && raw[0] >= 0x80 }

// coseAlgOf is the COSE algorithm of a JOSE signature algorithm, for the
// algorithms a CWT may be signed with (go-cose has no RSASSA-PKCS1-v1_5).
func coseAlgOf(alg jwa.SignatureAlgorithm) (cose.Algorithm, bool) {
	switch alg.String() {
	case "ES256":
		return cose.AlgorithmES256, true
	case "ES384":
		return cose.AlgorithmES384, true
	case "ES512":
		return cose.AlgorithmES512, true
	case "EdDSA", "Ed25519":
		// A JWKS key may name EdDSA by its fully-specified JOSE name; the
		// key is Ed25519 either way (store.ParseJWKS), which COSE calls EdDSA.
		return cose.AlgorithmEdDSA, true
	case "PS256":
		return cose.AlgorithmPS256, true
	case "PS384":
		return cose.AlgorithmPS384, true
	case "PS512":
		return cose.AlgorithmPS512, true
	}
	return 0, false
}

// cwtAlgs are the header algorithms accepted at all, before any key is looked at.
var cwtAlgs = map[cose.Algorithm]bool{
	cose.AlgorithmES256: true, cose.AlgorithmES384: true, cose.AlgorithmES512: true, cose.AlgorithmEdDSA: true,
	cose.AlgorithmPS256: true, cose.AlgorithmPS384: true, cose.AlgorithmPS512: true,
}

// coseVerifierFor is the COSE algorithm and verifier of an issuer key, or
// (0, nil) when the key cannot verify CWTs: it then verifies JWTs only.
func coseVerifierFor(alg jwa.SignatureAlgorithm, key jwk.Key) (cose.Algorithm, cose.Verifier) {
	ca, ok := coseAlgOf(alg)
	if !ok {
		return 0, nil
	}
	var pub any
	if err := jwk.Export(key, &pub); err != nil {
		return 0, nil
	}
	cv, err := cose.NewVerifier(ca, pub)
	if err != nil {
		// RSA keys under 2048 bits, which RFC 8230 forbids for PS*.
		return 0, nil
	}
	return ca, cv
}

// parseSign1 decodes the COSE_Sign1 envelope, tagged or not.
func parseSign1(raw []byte) (*cose.Sign1Message, *Error) {
	body := raw
	if bytes.HasPrefix(body, headCWT) {
		body = body[len(headCWT):]
		if !bytes.HasPrefix(body, headSign1) {
			return nil, fail(ReasonMalformed, "CWT tag 61 does not enclose a COSE_Sign1 (tag 18); %s", describeCBOR(body))
		}
	}
	var msg cose.Sign1Message
	var err error
	switch {
	case bytes.HasPrefix(body, headSign1):
		err = msg.UnmarshalCBOR(body)
	case bytes.HasPrefix(body, headArray):
		err = (*cose.UntaggedSign1Message)(&msg).UnmarshalCBOR(body)
	default:
		return nil, fail(ReasonMalformed, "binary token is not a COSE_Sign1 (tag 61 or 18, or a 4-element array); %s", describeCBOR(body))
	}
	if err != nil {
		return nil, fail(ReasonMalformed, "cannot parse COSE_Sign1: %v", err)
	}
	if msg.Payload == nil {
		return nil, fail(ReasonMalformed, "COSE_Sign1 has a detached payload; a CWT carries its claims")
	}
	// As a JWS must be canonical base64url (strict.go): the envelope's heads
	// are outside the signature (the protected header's byte-string head
	// too: Sig_structure re-encodes it), so a longer encoding of any of them
	// would be another byte form of one signed token, another cache entry
	// and another signature check.
	if !preferredCBOR(raw) {
		return nil, fail(ReasonMalformed, "the COSE_Sign1 is not in preferred serialization (RFC 8949 §4.2.1: shortest heads, definite lengths, one byte form per token)")
	}
	return &msg, nil
}

// preferredCBOR reports whether raw is one CBOR item in which every head is
// as short as its argument allows and no length is indefinite (RFC 8949
// §4.2.1). Byte and text strings are opaque: only the envelope is walked. Map
// key order is not checked: the only map outside the signature is the
// unprotected header, which may hold kid alone.
func preferredCBOR(raw []byte) bool {
	rest, ok := shortestItem(raw, 0)
	return ok && len(rest) == 0
}

func shortestItem(b []byte, depth int) ([]byte, bool) {
	if len(b) == 0 || depth > 16 {
		return nil, false
	}
	major, ai := b[0]>>5, b[0]&0x1f
	var arg uint64
	var n int
	switch {
	case ai < 24:
		arg, n = uint64(ai), 1
	case ai == 24 && len(b) >= 2:
		arg, n = uint64(b[1]), 2
		if arg < 24 && major != 7 || arg < 32 && major == 7 {
			return nil, false
		}
	case ai == 25 && len(b) >= 3:
		arg, n = uint64(b[1])<<8|uint64(b[2]), 3
		if arg <= 0xff && major != 7 {
			return nil, false
		}
	case ai == 26 && len(b) >= 5:
		arg, n = uint64(b[1])<<24|uint64(b[2])<<16|uint64(b[3])<<8|uint64(b[4]), 5
		if arg <= 0xffff && major != 7 {
			return nil, false
		}
	case ai == 27 && len(b) >= 9:
		for _, c := range b[1:9] {
			arg = arg<<8 | uint64(c)
		}
		n = 9
		if arg <= 0xffffffff && major != 7 {
			return nil, false
		}
	default:
		return nil, false // reserved, indefinite length, or truncated
	}
	b = b[n:]
	switch major {
	case 2, 3:
		if arg > uint64(len(b)) {
			return nil, false
		}
		return b[arg:], true
	case 4, 5:
		items := arg
		if major == 5 {
			items *= 2
		}
		if items > uint64(len(b)) {
			return nil, false
		}
		for range items {
			var ok bool
			if b, ok = shortestItem(b, depth+1); !ok {
				return nil, false
			}
		}
		return b, true
	case 6:
		return shortestItem(b, depth+1)
	}
	return b, true // an integer, a simple value or a float (not checked for width)
}

// describeCBOR names what a binary token that is not a COSE_Sign1 starts
// with, for the refusal: another COSE structure is worth recognising.
func describeCBOR(b []byte) string {
	if len(b) == 0 {
		return "it ends there"
	}
	switch {
	case b[0] == 0xd0:
		return "it is a COSE_Encrypt0 (tag 16): encrypted tokens are not supported"
	case b[0] == 0xd1:
		return "it is a COSE_Mac0 (tag 17): MACed tokens are not accepted, signatures only"
	case len(b) > 1 && b[0] == 0xd8 && b[1] == 0x62:
		return "it is a COSE_Sign (tag 98): one signer only (COSE_Sign1)"
	case len(b) > 1 && b[0] == 0xd8 && (b[1] == 0x60 || b[1] == 0x61):
		return fmt.Sprintf("it is a COSE message with tag %d: signatures only (COSE_Sign1)", b[1])
	case b[0] >= 0xc0 && b[0] <= 0xdb:
		return "it starts with another CBOR tag"
	case b[0] >= 0x80 && b[0] <= 0x9f:
		return "it starts with a CBOR array of another length"
	case b[0] >= 0xa0 && b[0] <= 0xbf:
		return "it starts with a CBOR map: unsigned claims are not a token"
	}
	return fmt.Sprintf("it starts with byte 0x%02x", b[0])
}

func (v *Verifier) verifyCWT(ring *keyRing, raw []byte) (*Claims, error) {
	msg, ferr := parseSign1(raw)
	if ferr != nil {
		return nil, ferr
	}
	prot, unprot := msg.Headers.Protected, msg.Headers.Unprotected
	for label := range prot {
		if _, ok := unprot[label]; ok {
			return nil, fail(ReasonBadHeader, "header parameter %s is in both the protected and the unprotected header (RFC 9052 §3)", labelName(label))
		}
	}
	alg, err := prot.Algorithm()
	if errors.Is(err, cose.ErrAlgorithmNotFound) {
		return nil, fail(ReasonBadHeader, "no alg in the protected header")
	}
	if err != nil {
		return nil, fail(ReasonBadHeader, "alg is not a COSE algorithm number: %v", err)
	}
	if !cwtAlgs[alg] {
		return nil, fail(ReasonBadHeader, "alg %s is not accepted (asymmetric signatures only: ES256, ES384, ES512, EdDSA, PS256, PS384, PS512)", algName(alg))
	}
	if crit, ok := prot[hdrCrit]; ok {
		return nil, fail(ReasonBadHeader, "header lists critical parameters %v, none are supported", crit)
	}
	// The unprotected header is not signed: it may name the key (kid) and
	// nothing else, so that one signed token has one byte form (and one
	// entry in the verified-token cache).
	for label := range unprot {
		if label != hdrKid {
			return nil, fail(ReasonBadHeader, "unprotected header parameter %s is not accepted (only kid may be unprotected)", labelName(label))
		}
	}
	// A typ (RFC 9596) naming another kind of CWT (an ID token, an
	// attestation result) is not an access token, as the JWT path insists
	// on at+jwt.
	if typ, ok := prot[hdrTyp]; ok && !isCWTContentType(typ) && typ != "application/at+cwt" {
		return nil, fail(ReasonBadHeader, "typ %s is not an access token (application/cwt or application/at+cwt)", labelName(typ))
	}
	ct, ok := prot[hdrContentType]
	if ok && !isCWTContentType(ct) {
		return nil, fail(ReasonBadHeader, "content type %s is not application/cwt (%d)", labelName(ct), cwtContentType)
	}
	kidv, ok := prot[hdrKid]
	if !ok {
		kidv, ok = unprot[hdrKid]
	}
	kidb, _ := kidv.([]byte)
	if !ok || len(kidb) == 0 {
		return nil, fail(ReasonBadHeader, "no kid in header")
	}
	if !utf8.Valid(kidb) {
		return nil, fail(ReasonBadHeader, "kid is not UTF-8 text (it names a key of an issuer's JWKS)")
	}
	kid := string(kidb)
	cands := (*ring)[kid]
	if len(cands) == 0 {
		return nil, fail(ReasonUnknownKey, "kid %q is not a key of any trusted issuer", kid)
	}
	var signer *ringKey
	algMatched := false
	var keyAlgs []string
	for i := range cands {
		k := &cands[i]
		keyAlgs = append(keyAlgs, k.alg.String())
		// The key decides the algorithm, as for JWTs.
		if k.cose == nil || k.coseAlg != alg {
			continue
		}
		algMatched = true
		if msg.Verify(nil, k.cose) == nil {
			signer = k
			break
		}
	}
	if signer == nil {
		if !algMatched {
			return nil, fail(ReasonBadHeader, "alg %s does not match key %q's algorithm (%s)", alg, kid, strings.Join(keyAlgs, ", "))
		}
		return nil, fail(ReasonBadSignature, "signature does not verify with key %q", kid)
	}
	// The signature is good; what fails from here is the claims themselves.
	p, ferr := cwtClaims(msg.Payload)
	if ferr != nil {
		return nil, ferr
	}
	p.Kid = kid
	return v.checkClaims(p, signer)
}

// algName is a COSE algorithm's number, and its name if it has one.
func algName(a cose.Algorithm) string {
	if name := a.String(); !strings.HasPrefix(name, "Algorithm(") {
		return fmt.Sprintf("%d (%s)", int64(a), name)
	}
	return fmt.Sprintf("%d", int64(a))
}

// labelName prints a COSE label or claim key: an integer, or quoted text.
func labelName(l any) string {
	if s, ok := l.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(l)
}

func isCWTContentType(v any) bool {
	switch ct := v.(type) {
	case int64:
		return ct == cwtContentType
	case string:
		// Media types are case-insensitive (RFC 6838 §4.2).
		return strings.EqualFold(ct, "application/cwt")
	}
	return false
}

// cwtClaims reads the claims map. Refusals are ReasonBadClaims: the signature
// over these bytes is good, so the issuer wrote them.
func cwtClaims(payload []byte) (*parsedClaims, *Error) {
	if len(payload) == 0 || payload[0]>>5 != 5 {
		return nil, fail(ReasonBadClaims, "the payload is not a CBOR map of claims")
	}
	var m map[any]any
	if err := cwtDecMode.Unmarshal(payload, &m); err != nil {
		return nil, fail(ReasonBadClaims, "claims are not valid CBOR: %v", err)
	}
	for k := range m {
		switch k.(type) {
		case int64, string:
		default:
			return nil, fail(ReasonBadClaims, "a claim key is neither an integer nor text (RFC 8392 §3)")
		}
	}
	p := &parsedClaims{format: cwtFormat}
	text := func(key any, name string, dst *string) *Error {
		v, present := m[key]
		if !present {
			return nil
		}
		s, ok := v.(string)
		if !ok {
			return fail(ReasonBadClaims, "%s is not a text string", name)
		}
		*dst = s
		return nil
	}
	if err := text(claimIss, "iss (1)", &p.Issuer); err != nil {
		return nil, err
	}
	if err := text(claimSub, "sub (2)", &p.Subject); err != nil {
		return nil, err
	}
	if err := text("client_id", "client_id", &p.ClientID); err != nil {
		return nil, err
	}
	if v, present := m[claimAud]; present {
		switch a := v.(type) {
		case string:
			p.Audience = []string{a}
		case []any:
			for _, e := range a {
				s, ok := e.(string)
				if !ok {
					return nil, fail(ReasonBadClaims, "aud (3) is not text or an array of text")
				}
				p.Audience = append(p.Audience, s)
			}
		default:
			return nil, fail(ReasonBadClaims, "aud (3) is not text or an array of text")
		}
	}
	for _, d := range []struct {
		key  int64
		name string
		dst  *time.Time
		has  *bool
	}{
		{claimExp, "exp (4)", &p.Expiry, &p.hasExp},
		{claimNbf, "nbf (5)", &p.NotBefore, nil},
		{claimIat, "iat (6)", &p.IssuedAt, &p.hasIat},
	} {
		v, present := m[d.key]
		if !present {
			continue
		}
		t, ok := numericDate(v)
		if !ok {
			return nil, fail(ReasonBadClaims, "%s is not a NumericDate (seconds since 1970 up to year 9999)", d.name)
		}
		*d.dst = t
		if d.has != nil {
			*d.has = true
		}
	}
	cti, hasCti := m[claimCti]
	jti, hasJti := m["jti"]
	switch {
	case hasCti && hasJti:
		// Two token ids: a revocation naming one would miss the other.
		return nil, fail(ReasonBadClaims, "both cti (7) and jti are present; give one token id")
	case hasCti:
		b, ok := cti.([]byte)
		if !ok {
			return nil, fail(ReasonBadClaims, "cti (7) is not a byte string")
		}
		p.JTI = base64.RawURLEncoding.EncodeToString(b)
	case hasJti:
		s, ok := jti.(string)
		if !ok {
			return nil, fail(ReasonBadClaims, "jti is not a text string")
		}
		p.JTI = s
	}
	if v, present := m[claimScope]; present {
		switch s := v.(type) {
		case string:
			p.scope = s
		case []byte:
			if !utf8.Valid(s) {
				p.scopeErr = fail(ReasonBadClaims, "scope (9) is a byte string that is not UTF-8 text")
			}
			p.scope = string(s)
		default:
			p.scopeErr = fail(ReasonBadClaims, "scope (9) is not text or a byte string")
		}
	}
	if v, present := m[claimCnf]; present {
		p.hasCnf = true
		p.Cnf, p.cnfErr = cwtCnf(v)
	}
	return p, nil
}

// numericDate reads an RFC 8392 NumericDate: an integer or a float, untagged.
// A fraction of a second is dropped and the time is UTC, as the JWT path's
// parser (jwx) does, so that the same token verifies the same in both forms.
func numericDate(v any) (time.Time, bool) {
	switch n := v.(type) {
	case int64:
		if n < 0 || n > maxNumericDate {
			return time.Time{}, false
		}
		return time.Unix(n, 0).UTC(), true
	case float32:
		return numericDate(float64(n))
	case float64:
		if math.IsNaN(n) || n < 0 || n > maxNumericDate {
			return time.Time{}, false
		}
		return time.Unix(int64(n), 0).UTC(), true
	}
	return time.Time{}, false
}

// cwtCnf reads an RFC 8747 confirmation claim: a kid (a PSK identity, RFC
// 9202) or a COSE_Key, which becomes the RFC 7638 thumbprint of the same key
// as a JWK, the form proofs of possession are checked against. Any other
// method (Encrypted_COSE_Key, a COSE key thumbprint) is refused rather than
// ignored: a token bound to a key the gateway cannot check must not be usable
// unbound.
func cwtCnf(v any) (Cnf, *Error) {
	var c Cnf
	m, ok := v.(map[any]any)
	if !ok {
		return c, fail(ReasonBadClaims, "cnf (8) is not a map")
	}
	for k, val := range m {
		switch k {
		case cnfKid:
			b, ok := val.([]byte)
			if !ok || len(b) == 0 || !utf8.Valid(b) {
				return c, fail(ReasonBadClaims, "cnf kid (3) is not a non-empty byte string holding UTF-8 text")
			}
			c.Kid = string(b)
		case cnfCOSEKey:
			jkt, err := coseKeyThumbprint(val)
			if err != nil {
				return c, fail(ReasonBadClaims, "cnf COSE_Key (1): %v", err)
			}
			c.JKT = jkt
		default:
			return c, fail(ReasonBadClaims, "cnf member %s is not supported (COSE_Key 1 or kid 3)", labelName(k))
		}
	}
	return c, nil
}

// coseKeyThumbprint checks a COSE_Key (RFC 9053 §7) of a kind device keys
// are, a public EC2 P-256 or OKP Ed25519 key, and returns the RFC 7638
// SHA-256 thumbprint (base64url) of the same key as a JWK.
func coseKeyThumbprint(v any) (string, error) {
	m, ok := v.(map[any]any)
	if !ok {
		return "", errors.New("not a map")
	}
	for k := range m {
		switch k {
		case keyKty, keyKid, keyAlg, keyOps, keyCrv, keyX, keyY:
		default:
			// -4 is the private key: a token must not carry it. Anything
			// else is not part of a P-256 or Ed25519 public key.
			return "", fmt.Errorf("parameter %s is not one of a public P-256 or Ed25519 key", labelName(k))
		}
	}
	bytesParam := func(label int64, size int) ([]byte, error) {
		b, ok := m[label].([]byte)
		if !ok || len(b) != size {
			return nil, fmt.Errorf("parameter %d is not a %d-byte string", label, size)
		}
		return b, nil
	}
	crv, _ := m[keyCrv].(int64)
	alg, hasAlg := m[keyAlg]
	var pub crypto.PublicKey
	switch kty, _ := m[keyKty].(int64); {
	case kty == ktyEC2 && crv == crvP256:
		if hasAlg && alg != int64(cose.AlgorithmES256) {
			return "", fmt.Errorf("alg %v is not ES256 (-7) for a P-256 key", alg)
		}
		x, err := bytesParam(keyX, 32)
		if err != nil {
			return "", err
		}
		y, err := bytesParam(keyY, 32) // a boolean y is a compressed point: not supported
		if err != nil {
			return "", err
		}
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return "", fmt.Errorf("not a point on P-256: %w", err)
		}
		pub = pk
	case kty == ktyOKP && crv == crvEd25519:
		if hasAlg && alg != int64(cose.AlgorithmEdDSA) {
			return "", fmt.Errorf("alg %v is not EdDSA (-8) for an Ed25519 key", alg)
		}
		if _, ok := m[keyY]; ok {
			return "", errors.New("an OKP key has no y")
		}
		x, err := bytesParam(keyX, ed25519.PublicKeySize)
		if err != nil {
			return "", err
		}
		pub = ed25519.PublicKey(x)
	default:
		return "", fmt.Errorf("kty %v crv %v is not EC2 P-256 (2, 1) or OKP Ed25519 (1, 6)", m[keyKty], m[keyCrv])
	}
	k, err := jwk.Import(pub)
	if err != nil {
		return "", fmt.Errorf("as a JWK: %w", err)
	}
	sum, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}
