package authn

import (
	"crypto"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/edgeid/edgeid/device"
)

// Proofs of possession are compact JWS signed with the device's own key (the
// one registered for it, whose thumbprint a key-bound token names in cnf
// jkt). MQTT signs a challenge nonce with one (broker), plain-UDP CoAP each
// request (coap); both check them here.

// proofAlg is the algorithm a device key's proofs must name.
func proofAlg(k jwk.Key) jwa.SignatureAlgorithm { return device.ProofAlg(k) }

// SignProof signs payload as a proof of type typ with the device's private
// key (device.SignProof; kept here for the servers' tests).
func SignProof(priv jwk.Key, typ string, payload []byte) ([]byte, error) {
	return device.SignProof(priv, typ, payload)
}

// VerifyProof checks that proof is a compact JWS of type typ signed by
// deviceKey (a public JWK) and returns its payload and the key's SHA-256
// thumbprint (base64url), to compare with a token's cnf jkt.
func VerifyProof(deviceKey, proof []byte, typ string) (payload []byte, jkt string, err error) {
	if len(deviceKey) == 0 {
		return nil, "", errors.New("no public key is registered for the device")
	}
	key, err := jwk.ParseKey(deviceKey)
	if err != nil {
		return nil, "", fmt.Errorf("device key: %w", err)
	}
	if payload, err = VerifyProofWith(key, proof, typ); err != nil {
		return nil, "", err
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", fmt.Errorf("device key thumbprint: %w", err)
	}
	return payload, base64.RawURLEncoding.EncodeToString(thumb), nil
}

// VerifyProofWith is VerifyProof with the device's key already parsed.
func VerifyProofWith(key jwk.Key, proof []byte, typ string) ([]byte, error) {
	msg, err := jws.Parse(proof, jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, errors.New("proof is not a compact JWS")
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if t, _ := h.Type(); t != typ {
		return nil, fmt.Errorf("proof typ %q is not %s", t, typ)
	}
	// No JWS extension is understood, and the header must name the key's
	// own algorithm: a proof saying another one is refused, not reinterpreted.
	if _, ok := h.Critical(); ok || h.Has("b64") {
		return nil, errors.New("proof header has crit or b64: no JWS extension is understood")
	}
	if alg, ok := h.Algorithm(); !ok || alg.String() != proofAlg(key).String() {
		return nil, fmt.Errorf("proof alg %q is not the device key's %s", alg.String(), proofAlg(key).String())
	}
	// The algorithm comes from the registered key, never from the header.
	payload, err := jws.Verify(proof, jws.WithKey(proofAlg(key), key))
	if err != nil {
		return nil, errors.New("proof signature does not verify with the device key")
	}
	return payload, nil
}

// SameJKT compares two key thumbprints in constant time.
func SameJKT(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
