package authn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/edge/authn"
)

// A proof of possession names the device key's own algorithm and no JWS
// extension: a header saying ES384 over an ES256 signature, or carrying
// crit or b64, is refused even though the signature verifies (MQTT AUTH and
// plain-UDP CoAP share this check).
func TestProofHeaderStrict(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	sign := func(header string) []byte {
		return []byte(signJWS(t, priv, header, `{"nonce":"n"}`))
	}
	const typ = "edgeid-pop+jws"
	if _, err := authn.VerifyProofWith(pub, sign(`{"alg":"ES256","typ":"`+typ+`"}`), typ); err != nil {
		t.Fatalf("a well-formed proof is refused: %v", err)
	}
	for name, header := range map[string]string{
		"another alg": `{"alg":"ES384","typ":"` + typ + `"}`,
		"crit":        `{"alg":"ES256","typ":"` + typ + `","crit":["exp"],"exp":1}`,
		"b64":         `{"alg":"ES256","typ":"` + typ + `","b64":true}`,
	} {
		_, err := authn.VerifyProofWith(pub, sign(header), typ)
		if err == nil || !(strings.Contains(err.Error(), "alg") || strings.Contains(err.Error(), "crit")) {
			t.Errorf("%s: %v, want refused naming the header", name, err)
		}
	}
}
