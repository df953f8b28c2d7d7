package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/edge/authn"
)

// Proof of possession for tokens bound to a key (cnf jkt), over MQTT 5
// enhanced authentication (the RFC 9431 challenge/response, with the proof
// as a JWS): CONNECT (method ace, data = token) → AUTH 0x18 (data = a fresh
// 32-byte nonce) → AUTH 0x18 (data = compact JWS signed with the device key
// over {"nonce": base64url(nonce), "client_id": id}) → CONNACK. The key is
// the device's registered public key; its RFC 7638 thumbprint must be the
// token's cnf jkt. A fresh nonce per exchange makes a recorded proof useless.

// ProofType is the JWS typ of a proof-of-possession answer.
const ProofType = device.MQTTProofType

// proofPayload is what the device signs.
type proofPayload = device.MQTTChallenge

func newNonce() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// checkProof verifies a proof against the device's registered key and
// returns the key's thumbprint (base64url).
func checkProof(deviceKey []byte, proof []byte, nonce []byte, clientID string) (string, error) {
	payload, jkt, err := authn.VerifyProof(deviceKey, proof, ProofType)
	if err != nil {
		return "", err
	}
	var p proofPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return "", errors.New("proof payload is not JSON")
	}
	if p.Nonce != base64.RawURLEncoding.EncodeToString(nonce) || p.ClientID != clientID {
		return "", errors.New("proof is for another challenge (replayed?)")
	}
	return jkt, nil
}

// Prove answers a challenge: the device side, device.ProveMQTT (kept here
// for the broker's tests).
func Prove(priv jwk.Key, nonce []byte, clientID string) ([]byte, error) {
	return device.ProveMQTT(priv, nonce, clientID)
}

// challenge runs the AUTH exchange inside CONNECT and returns the proven
// thumbprint. The connection still carries the CONNECT deadline.
func (b *Broker) challenge(cl *mqtt.Client, token, clientID string) (string, error) {
	c, err := b.Auth.Verifier.Verify(token)
	if err != nil || c.Cnf.JKT == "" {
		return "", nil // not key-bound: nothing to prove (Token decides the rest)
	}
	d, err := b.Auth.Store.Device(c.ClientID)
	if err != nil {
		return "", &authn.Error{Reason: authn.ReasonUnknownDevice, Detail: fmt.Sprintf("client_id %q is not a device known to this gateway", c.ClientID)}
	}
	if len(d.PublicKey) == 0 {
		return "", &authn.Error{Reason: authn.ReasonPoPRequired, Detail: "token is bound to a key (cnf jkt) but no public key is registered for the device"}
	}
	nonce := newNonce()
	if err := cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: packets.CodeContinueAuthentication.Code,
		Properties: packets.Properties{AuthenticationMethod: AuthMethodACE, AuthenticationData: nonce}}); err != nil {
		return "", fmt.Errorf("send challenge: %w", err)
	}
	if cl.Net.Conn != nil {
		_ = cl.Net.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	fh := new(packets.FixedHeader)
	if err := cl.ReadFixedHeader(fh); err != nil {
		return "", fmt.Errorf("read proof: %w", err)
	}
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return "", fmt.Errorf("read proof: %w", err)
	}
	if pk.FixedHeader.Type != packets.Auth || pk.Properties.AuthenticationMethod != AuthMethodACE {
		return "", &authn.Error{Reason: authn.ReasonPoPRequired, Detail: "expected an AUTH packet with method ace answering the challenge"}
	}
	thumb, err := checkProof(d.PublicKey, pk.Properties.AuthenticationData, nonce, clientID)
	if err != nil {
		return "", &authn.Error{Reason: authn.ReasonCnfMismatch, Detail: "proof of possession: " + err.Error()}
	}
	return thumb, nil
}
