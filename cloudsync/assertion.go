package cloudsync

import (
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// SignAssertion makes the short-lived JWT a gateway sends as
// "Authorization: EdgeID-GW <jwt>" on every sync request (the RFC 7523
// private_key_jwt idea, with the gateway's enrolled key).
func SignAssertion(key jwk.Key, gateway, audience string, now time.Time) (string, error) {
	tok, err := jwt.NewBuilder().Issuer(gateway).Subject(gateway).Audience([]string{audience}).
		IssuedAt(now).Expiration(now.Add(AssertionLifetime)).JwtID(randomJTI()).Build()
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, AssertionType)
	out, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(h)))
	return string(out), err
}

// Assertion is a verified gateway request assertion.
type Assertion struct {
	Gateway string
	JTI     string
	Expires time.Time
}

// VerifyAssertion checks a gateway's request assertion. keyOf returns the
// gateway's enrolled public key. The caller refuses a JTI seen before.
func VerifyAssertion(raw, audience string, keyOf func(gateway string) (jwk.Key, error), now time.Time) (Assertion, error) {
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return Assertion{}, errors.New("malformed assertion")
	}
	if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != AssertionType {
		return Assertion{}, fmt.Errorf("assertion typ %q is not %s", typ, AssertionType)
	}
	unverified, err := jwt.ParseInsecure([]byte(raw))
	if err != nil {
		return Assertion{}, errors.New("malformed assertion claims")
	}
	gw, _ := unverified.Issuer()
	key, err := keyOf(gw)
	if err != nil {
		return Assertion{}, fmt.Errorf("gateway %q is not enrolled", gw)
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKey(jwa.ES256(), key), jwt.WithValidate(true),
		jwt.WithIssuer(gw), jwt.WithSubject(gw), jwt.WithAudience(audience), jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithAcceptableSkew(30*time.Second), jwt.WithMaxDelta(AssertionLifetime, jwt.ExpirationKey, jwt.IssuedAtKey),
		jwt.WithRequiredClaim(jwt.JwtIDKey))
	if err != nil {
		return Assertion{}, fmt.Errorf("assertion of gateway %q: %v", gw, err)
	}
	jti, _ := tok.JwtID()
	exp, _ := tok.Expiration()
	return Assertion{Gateway: gw, JTI: jti, Expires: exp}, nil
}
