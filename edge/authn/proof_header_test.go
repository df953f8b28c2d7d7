package authn_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	b64 := base64.RawURLEncoding.EncodeToString
	sign := func(header string) []byte {
		in := b64([]byte(header)) + "." + b64([]byte(`{"nonce":"n"}`))
		sum := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, priv, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return []byte(in + "." + b64(sig))
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
