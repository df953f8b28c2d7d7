// Package device holds what a device (or the edgeid-sensor simulator) needs
// to speak to an EdgeID gateway and authority, and what those servers check
// it against: the OAuth names a device sends, the proof-of-possession it
// signs for MQTT 5 enhanced authentication and for plain-UDP CoAP, and the
// CoAP options and paths those ride in. It imports nothing of the project,
// so a device-side program links no server code.
package device

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// OAuth names a device sends to the authority.
const (
	// ClientAssertionType is RFC 7523's client_assertion_type for a JWT
	// signed with the device's registered key (private_key_jwt).
	ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// DeviceCodeGrant is RFC 8628's grant_type for the device's poll.
	DeviceCodeGrant = "urn:ietf:params:oauth:grant-type:device_code"
)

// MQTT 5 enhanced authentication (RFC 9431's "ace" method with a proof of
// possession of the key a token's cnf jkt names).
const (
	// AuthMethodACE is the MQTT 5 Authentication Method of RFC 9431.
	AuthMethodACE = "ace"
	// MQTTProofType is the JWS typ of the answer to the gateway's AUTH challenge.
	MQTTProofType = "edgeid-pop+jws"
)

// MQTTChallenge is what the device signs to answer an AUTH challenge: the
// gateway's nonce (base64url) and the client id it connects with.
type MQTTChallenge struct {
	Nonce    string `json:"nonce"`
	ClientID string `json:"client_id"`
}

// ProveMQTT answers the gateway's AUTH challenge nonce for clientID with
// the device's private key.
func ProveMQTT(priv jwk.Key, nonce []byte, clientID string) ([]byte, error) {
	payload, _ := json.Marshal(MQTTChallenge{Nonce: base64.RawURLEncoding.EncodeToString(nonce), ClientID: clientID})
	return SignProof(priv, MQTTProofType, payload)
}

// ProofAlg is the JWS algorithm of a device key: EdDSA for OKP keys, ES256
// otherwise (device keys are P-256 or Ed25519). A proof's header must name it.
func ProofAlg(k jwk.Key) jwa.SignatureAlgorithm {
	if k.KeyType() == jwa.OKP() {
		return jwa.EdDSA()
	}
	return jwa.ES256()
}

// SignProof signs payload as a proof of type typ with the device's private key.
func SignProof(priv jwk.Key, typ string, payload []byte) ([]byte, error) {
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, typ); err != nil {
		return nil, err
	}
	return jws.Sign(payload, jws.WithKey(ProofAlg(priv), priv, jws.WithProtectedHeaders(h)))
}

// CoAP: the access token rides in option OptionAccessToken, or is posted
// once to PathAuthzInfo (RFC 9200 §5.10.1) and then named by its digest in
// each proof; a plain-UDP request carries its proof in OptionProof. Both
// options are in the experimental range (RFC 7252 §12.2), elective and
// unsafe to forward, so a proxy that does not know them drops the request
// rather than passing the token on.
const (
	OptionAccessToken message.OptionID = 65002
	OptionProof       message.OptionID = 65006
	// PathAuthzInfo is RFC 9200's token upload resource.
	PathAuthzInfo = "/authz-info"
	// UDPProofType is the typ header of a plain-UDP request proof.
	UDPProofType = "edgeid-coap-pop+jws"
	// ProofWindow is how far a proof's iat may be from the gateway's clock.
	ProofWindow = 60 * time.Second
)

// Proof is what a plain-UDP request proof signs: the request, so that a
// captured one cannot be altered (its payload, or the options that change
// what it does: Observe, Content-Format, Block1, Request-Tag) or moved to
// another resource, with a time and a unique id so it cannot be replayed.
type Proof struct {
	Method string `json:"m"`   // "GET", "PUT", "POST", "DELETE"
	URI    string `json:"u"`   // path, and "?" and the queries joined by "&" if any
	ATH    string `json:"ath"` // base64url SHA-256 of the access token
	PH     string `json:"ph"`  // base64url SHA-256 of the payload (empty payload too)
	IAT    int64  `json:"iat"` // seconds since the epoch
	JTI    string `json:"jti"` // unique per request
	// The request's Observe, Content-Format and Block1 values and its
	// Request-Tag (base64url), each present exactly when the request has it.
	Observe       *uint32 `json:"obs,omitempty"`
	ContentFormat *uint32 `json:"cf,omitempty"`
	Block1        *uint32 `json:"b1,omitempty"`
	RequestTag    string  `json:"rt,omitempty"`
}

// Digest is the base64url SHA-256 a proof names a token or payload by.
func Digest(b []byte) string {
	h := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Request is one plain-UDP request to prove: Method and URI as the request
// has them, Token the access token it uses (sent along or posted to
// /authz-info), Body its payload, and the options a proof covers when the
// request carries them.
type Request struct {
	Method        codes.Code
	URI           string
	Token         string
	Body          []byte
	Observe       *uint32
	ContentFormat *message.MediaType
	Block1        *uint32
	RequestTag    []byte
}

// ProveCoAP signs the proof of one plain-UDP request with the device's private key.
func ProveCoAP(priv jwk.Key, r Request, now time.Time) ([]byte, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	pr := Proof{Method: r.Method.String(), URI: r.URI, ATH: Digest([]byte(r.Token)), PH: Digest(r.Body),
		IAT: now.Unix(), JTI: base64.RawURLEncoding.EncodeToString(id), Observe: r.Observe, Block1: r.Block1}
	if r.ContentFormat != nil {
		cf := uint32(*r.ContentFormat)
		pr.ContentFormat = &cf
	}
	if len(r.RequestTag) > 0 {
		pr.RequestTag = base64.RawURLEncoding.EncodeToString(r.RequestTag)
	}
	payload, err := json.Marshal(pr)
	if err != nil {
		return nil, err
	}
	return SignProof(priv, UDPProofType, payload)
}
