package demo

import (
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/veraison/go-cose"
)

// CWTTags says how MintCWT wraps its COSE_Sign1.
type CWTTags int

// Ways of tagging a CWT (RFC 8392 §6).
const (
	// TagCWT is tag 61 (CWT) around tag 18 (COSE_Sign1): self-describing.
	TagCWT CWTTags = iota
	// TagSign1 is tag 18 alone.
	TagSign1
	// Untagged is the bare COSE_Sign1 array, for contexts that know it is a CWT.
	Untagged
)

// CWTOption changes how MintCWT encodes a token: its tags, and (for tests of
// bad tokens) any header parameter or claim.
type CWTOption func(*cwtOptions)

type cwtOptions struct {
	tags                   CWTTags
	protected, unprotected map[any]any
	claims                 map[any]any
}

// WithCWTTags chooses the tags; TagCWT by default.
func WithCWTTags(t CWTTags) CWTOption { return func(o *cwtOptions) { o.tags = t } }

// WithProtected sets protected header parameter label (an integer or text) to
// value, or removes it if value is nil. The signature is still made with the
// issuer key's own algorithm, whatever alg (1) the header then names.
func WithProtected(label, value any) CWTOption {
	return func(o *cwtOptions) { o.protected[normLabel(label)] = value }
}

// WithUnprotected sets unprotected header parameter label to value, or removes
// it if value is nil.
func WithUnprotected(label, value any) CWTOption {
	return func(o *cwtOptions) { o.unprotected[normLabel(label)] = value }
}

// WithClaim sets the claim under CBOR key (an integer or text) to value after
// the claims are mapped, or removes it if value is nil: for claims MintCWT
// does not map (a cnf COSE_Key) and for claims of the wrong type.
func WithClaim(key, value any) CWTOption {
	return func(o *cwtOptions) { o.claims[normLabel(key)] = value }
}

// normLabel makes every integer label an int64, so that an option given 4
// replaces the kid the minter set as int64(4).
func normLabel(l any) any {
	switch v := l.(type) {
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case uint:
		return int64(v)
	case cose.Algorithm:
		return int64(v)
	}
	return l
}

// cwtEnc encodes deterministically (RFC 8949 §4.2.1), as COSE asks of the
// protected header and as makes tokens reproducible.
var cwtEnc = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// coseAlg is the COSE form of the issuer's algorithm.
func (i *Issuer) coseAlg() (cose.Algorithm, error) {
	switch i.Alg.String() {
	case "ES256":
		return cose.AlgorithmES256, nil
	case "ES384":
		return cose.AlgorithmES384, nil
	case "ES512":
		return cose.AlgorithmES512, nil
	case "EdDSA", "Ed25519":
		return cose.AlgorithmEdDSA, nil
	case "PS256":
		return cose.AlgorithmPS256, nil
	case "PS384":
		return cose.AlgorithmPS384, nil
	case "PS512":
		return cose.AlgorithmPS512, nil
	}
	return 0, fmt.Errorf("alg %s has no COSE signature form here", i.Alg)
}

// MintCWT signs claims, given as for Mint (JWT names, as Claims builds them),
// as a CWT: a COSE_Sign1 whose protected header holds alg and kid, over the
// RFC 8392 claims map. iss, sub, aud, exp, nbf, iat and scope take their
// integer keys; jti becomes cti, the bytes it is the base64url of (so the
// verified token's JTI is jti again), or stays a text "jti" if it is not
// base64url; client_id and unknown claims keep their text names; cnf may hold
// kid only.
func (i *Issuer) MintCWT(claims map[string]any, opts ...CWTOption) ([]byte, error) {
	alg, err := i.coseAlg()
	if err != nil {
		return nil, err
	}
	o := cwtOptions{
		protected:   map[any]any{int64(1): int64(alg), int64(4): []byte(i.Kid)},
		unprotected: map[any]any{},
		claims:      map[any]any{},
	}
	m, err := cwtClaimsOf(claims)
	if err != nil {
		return nil, err
	}
	for _, opt := range opts {
		opt(&o)
	}
	for k, v := range o.claims {
		m[k] = v
	}
	payload, err := cwtEnc.Marshal(dropNil(m))
	if err != nil {
		return nil, fmt.Errorf("encode claims: %w", err)
	}
	protected := []byte{} // an empty protected header is a zero-length string
	if p := dropNil(o.protected); len(p) > 0 {
		if protected, err = cwtEnc.Marshal(p); err != nil {
			return nil, fmt.Errorf("encode protected header: %w", err)
		}
	}
	// Sig_structure (RFC 9052 §4.4), external AAD empty.
	tbs, err := cwtEnc.Marshal([]any{"Signature1", protected, []byte{}, payload})
	if err != nil {
		return nil, err
	}
	var priv any
	if err := jwk.Export(i.Key, &priv); err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	cs, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("issuer key %T cannot sign", priv)
	}
	signer, err := cose.NewSigner(alg, cs)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	sig, err := signer.Sign(rand.Reader, tbs)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	var msg any = []any{protected, dropNil(o.unprotected), payload, sig}
	switch o.tags {
	case TagCWT:
		msg = cbor.Tag{Number: 61, Content: cbor.Tag{Number: 18, Content: msg}}
	case TagSign1:
		msg = cbor.Tag{Number: 18, Content: msg}
	case Untagged:
	default:
		return nil, fmt.Errorf("unknown CWTTags %d", o.tags)
	}
	return cwtEnc.Marshal(msg)
}

func dropNil(m map[any]any) map[any]any {
	out := make(map[any]any, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = v
		}
	}
	return out
}

// cwtClaimsOf maps JWT-named claims to a CWT claims map.
func cwtClaimsOf(claims map[string]any) (map[any]any, error) {
	keys := map[string]int64{"iss": 1, "sub": 2, "aud": 3, "exp": 4, "nbf": 5, "iat": 6, "scope": 9}
	m := make(map[any]any, len(claims))
	for name, v := range claims {
		switch name {
		case "exp", "nbf", "iat":
			d, err := numericDate(v)
			if err != nil {
				return nil, fmt.Errorf("claim %s: %w", name, err)
			}
			m[keys[name]] = d
		case "jti":
			s, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("claim jti is %T, not a string", v)
			}
			if b, err := base64.RawURLEncoding.Strict().DecodeString(s); err == nil && len(b) > 0 && base64.RawURLEncoding.EncodeToString(b) == s {
				m[int64(7)] = b
			} else {
				m["jti"] = s
			}
		case "cnf":
			c, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("claim cnf is %T, not an object", v)
			}
			cnf := map[any]any{}
			for member, mv := range c {
				kid, isString := mv.(string)
				if member != "kid" || !isString {
					return nil, fmt.Errorf("cnf member %q: only a string kid has a CWT form here (use WithClaim for a COSE_Key)", member)
				}
				cnf[int64(3)] = []byte(kid)
			}
			m[int64(8)] = cnf
		default:
			if k, ok := keys[name]; ok {
				m[k] = v
			} else {
				m[name] = v
			}
		}
	}
	return m, nil
}

// numericDate is a claim time as CBOR: an integer of seconds, or a float if
// it has a fraction.
func numericDate(v any) (any, error) {
	switch t := v.(type) {
	case int:
		return int64(t), nil
	case int64:
		return t, nil
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			return int64(t), nil
		}
		return t, nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return n, nil
		}
		return t.Float64()
	case time.Time:
		return t.Unix(), nil
	}
	return nil, errors.New("not a number of seconds or a time.Time")
}
