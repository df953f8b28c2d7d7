package edge_test

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// prover answers the gateway's AUTH challenge with a proof signed by key.
type prover struct {
	key      jwk.Key
	clientID string
	replay   []byte // when set, answer with this recorded proof instead
	last     []byte
}

func (p *prover) Authenticate(a *paho.Auth) *paho.Auth {
	proof := p.replay
	if proof == nil {
		proof, _ = broker.Prove(p.key, a.Properties.AuthData, p.clientID)
	}
	p.last = proof
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "ace", AuthData: proof}}
}

func (p *prover) Authenticated() {}

func (g *gw) connectWithProof(clientID, token string, p *prover) byte {
	g.t.Helper()
	conn := g.dial(connOpts{})
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: p, OnClientError: func(error) {}})
	ca, err := c.Connect(g.ctx(), &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(token)}})
	if ca == nil {
		g.t.Logf("connect: %v", err)
		return 0xff
	}
	if ca.ReasonCode == 0 {
		g.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return ca.ReasonCode
}

func TestProofOfPossession(t *testing.T) {
	g := startGateway(t)
	devKey, _ := demo.NewIssuer("dev", "dev-key") // the device's own key pair
	pub, _ := devKey.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-7", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	thumb, _ := pub.Thumbprint(crypto.SHA256)
	bound := g.token("thermo-7", "alice", func(c map[string]any) {
		c["cnf"] = map[string]any{"jkt": base64.RawURLEncoding.EncodeToString(thumb)}
	})

	good := &prover{key: devKey.Key, clientID: "thermo-7"}
	if code := g.connectWithProof("thermo-7", bound, good); code != 0 {
		t.Fatalf("bound token with its proof: CONNACK %s", hexCode(code))
	}
	other, _ := demo.NewIssuer("x", "other")
	if code := g.connectWithProof("thermo-7", bound, &prover{key: other.Key, clientID: "thermo-7"}); code != 0x87 {
		t.Errorf("proof signed with another key: CONNACK %s, want 0x87", hexCode(code))
	}
	if code := g.connectWithProof("thermo-7", bound, &prover{replay: good.last, clientID: "thermo-7"}); code != 0x87 {
		t.Errorf("replayed proof: CONNACK %s, want 0x87", hexCode(code))
	}
	// A bearer copy of the bound token on another connection, without the key.
	if code, _ := g.connect(connOpts{clientID: "thermo-7", token: bound, method: "password"}); code != 0x87 {
		t.Errorf("bound token as a password: CONNACK %s, want 0x87", hexCode(code))
	}
	// A key registered for the device but not the one the token names.
	otherPub, _ := other.Key.PublicKey()
	otherJSON, _ := json.Marshal(otherPub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-7", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: otherJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	if code := g.connectWithProof("thermo-7", bound, &prover{key: other.Key, clientID: "thermo-7"}); code != 0x87 {
		t.Errorf("proof by a key other than cnf.jkt: CONNACK %s, want 0x87", hexCode(code))
	}
	_ = time.Second
}

func TestReauthentication(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	devKey, _ := demo.NewIssuer("dev", "dev-key")
	pub, _ := devKey.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	if _, err := g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "thermo-7", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	thumb, _ := pub.Thumbprint(crypto.SHA256)
	jkt := base64.RawURLEncoding.EncodeToString(thumb)
	mint := func(exp time.Duration, jti string) string {
		return g.token("thermo-7", "alice", func(c map[string]any) {
			c["cnf"] = map[string]any{"jkt": jkt}
			c["exp"] = time.Now().Add(exp).Unix()
			c["jti"] = jti
		})
	}
	p := &prover{key: devKey.Key, clientID: "thermo-7"}
	disc := make(chan byte, 1)
	conn := g.dial(connOpts{})
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: p, OnClientError: func(error) {},
		OnServerDisconnect: func(d *paho.Disconnect) { disc <- d.ReasonCode }})
	ca, err := c.Connect(g.ctx(), &paho.Connect{ClientID: "thermo-7", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(mint(2*time.Second, "first"))}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v", err)
	}
	// Re-authenticate with a fresh, longer token before the first one expires.
	r, err := c.Authenticate(g.ctx(), &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "ace", AuthData: []byte(mint(time.Hour, "second"))}})
	if err != nil || !r.Success {
		t.Fatalf("re-authentication: %+v %v", r, err)
	}
	time.Sleep(2500 * time.Millisecond) // past the first token's expiry
	if pr, err := c.Publish(g.ctx(), &paho.Publish{Topic: "devices/thermo-7/telemetry/t", Payload: []byte("1"), QoS: 1}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("publish after the first token expired, under the second: %+v %v", pr, err)
	}
	// A re-authentication with a revoked token ends the session.
	if _, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeToken, Value: "third",
		RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}}, nil); err != nil {
		t.Fatal(err)
	}
	go c.Authenticate(g.ctx(), &paho.Auth{ReasonCode: 0x19, Properties: &paho.AuthProperties{AuthMethod: "ace", AuthData: []byte(mint(time.Hour, "third"))}})
	select {
	case code := <-disc:
		if code != 0x87 {
			t.Fatalf("DISCONNECT %s, want 0x87", hexCode(code))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("re-authentication with a revoked token did not end the session")
	}
}
