package device_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/edge/authn"
)

func keys(t *testing.T) (jwk.Key, jwk.Key) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.Import(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// What a device signs is what the gateway checks: the MQTT challenge answer
// and a plain-UDP request proof verify with the device's public key under
// their own typ, and carry what they must.
func TestProofsVerifyAtTheGateway(t *testing.T) {
	priv, pub := keys(t)
	jws, err := device.ProveMQTT(priv, []byte("nonce-123"), "thermo-1")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := authn.VerifyProofWith(pub, jws, device.MQTTProofType)
	if err != nil {
		t.Fatalf("MQTT proof refused: %v", err)
	}
	var c device.MQTTChallenge
	if json.Unmarshal(payload, &c) != nil || c.ClientID != "thermo-1" || c.Nonce == "" {
		t.Fatalf("MQTT proof payload %s", payload)
	}
	if _, err := authn.VerifyProofWith(pub, jws, device.UDPProofType); err == nil {
		t.Fatal("an MQTT proof was taken as a CoAP proof")
	}

	now := time.Now()
	jws, err = device.ProveCoAP(priv, device.Request{Method: codes.PUT, URI: "/ps/devices/thermo-1/telemetry/temp", Token: "tok", Body: []byte("21.5")}, now)
	if err != nil {
		t.Fatal(err)
	}
	payload, err = authn.VerifyProofWith(pub, jws, device.UDPProofType)
	if err != nil {
		t.Fatalf("CoAP proof refused: %v", err)
	}
	var p device.Proof
	if json.Unmarshal(payload, &p) != nil || p.Method != "PUT" || p.ATH != device.Digest([]byte("tok")) ||
		p.PH != device.Digest([]byte("21.5")) || p.IAT != now.Unix() || p.JTI == "" {
		t.Fatalf("CoAP proof payload %s", payload)
	}
}
