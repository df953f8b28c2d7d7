package edge_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Issue 15, RFC 7009 at the gateway: a paired device revokes its own
// refresh token at the authority; the grant's access tokens are revoked
// with it (jti revocations in the feed) and the gateway ends the session
// that uses one (DISCONNECT 0x87), then refuses the token.
func TestRevokedGrantCutsSession(t *testing.T) {
	t.Parallel()
	x := startAuthority(t)
	speaker, _ := demo.NewIssuer("speaker-7", "speaker-7-key")
	pub, _ := speaker.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "speaker-7", Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-home") })
	waitFor(t, "the speaker at the gateway", func() bool { _, err := g.g.Store.Device("speaker-7"); return err == nil })

	da := x.oauth(speaker, "speaker-7", "/oauth/device_authorization", url.Values{})
	if err := x.a.DecidePairing(da["user_code"].(string), "alice", true); err != nil {
		t.Fatal(err)
	}
	m := x.oauth(speaker, "speaker-7", "/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {da["device_code"].(string)}})
	tok, _ := m["access_token"].(string)
	rt, _ := m["refresh_token"].(string)
	if tok == "" || rt == "" {
		t.Fatalf("pairing: %v", m)
	}
	waitFor(t, "the pairing at the gateway", func() bool { d, _ := g.g.Store.Device("speaker-7"); return d.Owner == "alice" })

	disc := make(chan byte, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: g.dial(connOpts{}), AuthHandler: &prover{key: speaker.Key, clientID: "speaker-7"}, OnClientError: func(error) {},
		OnServerDisconnect: func(d *paho.Disconnect) { disc <- d.ReasonCode }})
	ca, err := c.Connect(g.ctx(), &paho.Connect{ClientID: "speaker-7", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect with the paired token: %v", err)
	}
	// The device revokes its refresh token (not the access token it uses).
	if m := x.oauth(speaker, "speaker-7", "/oauth/revoke", url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}}); len(m) != 0 {
		t.Fatalf("revoke: %v", m)
	}
	select {
	case code := <-disc:
		if code != 0x87 {
			t.Fatalf("DISCONNECT %s, want 0x87", hexCode(code))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway did not end the session of the revoked grant's token")
	}
	if code := g.connectWithProof("speaker-7", tok, &prover{key: speaker.Key, clientID: "speaker-7"}); code != 0x87 {
		t.Fatalf("the revoked grant's token: CONNACK %s, want 0x87", hexCode(code))
	}
}
