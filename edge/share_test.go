package edge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/store"
)

// Sharing (issue 14) at the gateway: a requesting party token (RPT) gets
// exactly what the shares it presents grant, as they stand in the store,
// on MQTT 5 and on HTTPS event streams; a share deleted, a grantee disabled
// or revoked ends its sessions; a share's daily window opens and closes
// live sessions' permission at the boundary (share_window_test.go); a
// refusal of a shared resource carries a UMA permission ticket
// (share_uma_test.go).

// The requesting parties: bob (alice's friend) with his phone app, and
// carol with hers. alice owns thermo-1 and thermo-2 (the demo bundle).
func shareParties() store.Batch {
	return store.Batch{
		Users: []store.User{{ID: "bob", Name: "Bob", Status: store.UserActive}, {ID: "carol", Name: "Carol", Status: store.UserActive}},
		Devices: []store.Device{
			{ID: "bob-phone", Class: "app", Owner: "bob", Status: store.DeviceActive},
			{ID: "carol-phone", Class: "app", Owner: "carol", Status: store.DeviceActive},
		},
	}
}

// share is alice's share id of thermo-1's group with grantee (a user).
func share(id, grantee, group string, scopes ...string) store.Grant {
	return store.Grant{ID: id, Owner: "alice", Device: "thermo-1", Grantee: grantee, GranteeKind: store.GranteeUser,
		Resources: []store.SharedResource{{Device: "thermo-1", Group: group, Scopes: scopes}}}
}

// apply applies b to the gateway's store, as a sync would.
func (g *gw) apply(t *testing.T, b store.Batch) {
	t.Helper()
	if _, err := g.g.Store.Apply(&b, nil); err != nil {
		t.Fatal(err)
	}
}

// perm is one entry of an RPT's permissions claim.
type perm struct{ resource, share string }

// rpt mints a requesting party token for client acting for sub, with an
// empty scope and the permissions claim perms (each with scope sub).
func (g *gw) rpt(client, sub string, perms ...perm) string {
	g.t.Helper()
	c := g.iss.Claims(client, sub, "edgeid", "", time.Hour)
	ps := []map[string]any{}
	for _, p := range perms {
		ps = append(ps, map[string]any{"resource_id": p.resource, "resource_scopes": []string{"sub"}, "share": p.share})
	}
	c["permissions"] = ps
	tok, err := g.iss.Mint(c, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	return tok
}

// connectAsking is mustConnect (a token over plain MQTT 5) for a client that
// asks for problem information (Request Problem Information 1: reason
// strings and user properties on refusals; paho sends 0 unless told).
func (g *gw) connectAsking(t *testing.T, clientID, token string) *client {
	t.Helper()
	cl := &client{msgs: make(chan *paho.Publish, 100), disconnect: make(chan *paho.Disconnect, 1)}
	cl.conn = g.dial(connOpts{})
	pc := paho.NewClient(paho.ClientConfig{
		Conn: cl.conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { cl.disconnect <- d },
		OnClientError:      func(error) {},
	})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ca, err := pc.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(token), RequestProblemInfo: true}})
	if ca == nil || ca.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v %v; logs:\n%s", clientID, ca, err, g.logs.String())
	}
	cl.c, cl.done = pc, pc.Done()
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return cl
}

// suback subscribes to filter and returns the whole SUBACK.
func (c *client) suback(t *testing.T, filter string) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if sa == nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if sa.Properties == nil {
		sa.Properties = &paho.SubackProperties{}
	}
	return sa
}

func TestShareRPTGetsExactlyTheSharedTopics(t *testing.T) {
	g := startHTTP(t)
	b := shareParties()
	b.Grants = []store.Grant{share("s-tele", "bob", "telemetry", "sub")}
	g.apply(t, b)
	tok := g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-tele"})

	bob := g.mustConnect(connOpts{clientID: "bob-phone", token: tok})
	if rc := bob.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] != 1 {
		t.Fatalf("subscribe to the shared telemetry: %s", hexCode(rc[0]))
	}
	for _, f := range []string{"devices/thermo-2/telemetry/#", "devices/thermo-1/commands/#", "devices/thermo-1/status", "devices/+/telemetry/#", "#"} {
		if rc := bob.subscribe(t, f); rc[0] != 0x87 {
			t.Errorf("subscribe to %s, not shared: %s, want 0x87", f, hexCode(rc[0]))
		}
	}
	for _, topic := range []string{"devices/thermo-1/commands/set", "devices/thermo-1/telemetry/temp"} {
		if rc := bob.publish(t, topic, "21", 1); rc != 0x87 {
			t.Errorf("publish on %s (shared for sub only, or not shared): %s, want 0x87", topic, hexCode(rc))
		}
	}
	st := g.openStream(t, tok, "devices/thermo-1/telemetry/#")
	code, body := g.curl(t, "-H", "Accept: text/event-stream", "-H", "Authorization: Bearer "+tok, g.httpURL("/v1/topics/devices/thermo-2/telemetry/%23"))
	if code != "403" || !strings.Contains(body, "insufficient_scope") {
		t.Errorf("event stream of thermo-2, not shared: %s %s", code, body)
	}

	// thermo-2's readings reach neither; thermo-1's reach both.
	t2 := g.mustConnect(connOpts{clientID: "thermo-2", token: g.token("thermo-2", "alice", nil)})
	t2.publish(t, "devices/thermo-2/telemetry/temp", "t2-reading", 1)
	t1 := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	t1.publish(t, "devices/thermo-1/telemetry/temp", "t1-reading", 1)
	bob.expectNoMsgBefore(t, "devices/thermo-2/telemetry/temp", "devices/thermo-1/telemetry/temp", "t1-reading")
	if l := st.waitLine(t, "data:"); !strings.Contains(l, `"topic":"devices/thermo-1/telemetry/temp"`) || !strings.Contains(l, "t1-reading") {
		t.Errorf("event stream: %s", l)
	}
}

// Deleting a share (the owner revoked it; a sync applies the deletion)
// ends the sessions presenting it, and the RPT is refused afterwards.
func TestShareDeletedEndsItsSessions(t *testing.T) {
	g := startHTTP(t)
	b := shareParties()
	b.Grants = []store.Grant{share("s-tele", "bob", "telemetry", "sub"), share("s-carol", "carol", "telemetry", "sub")}
	g.apply(t, b)
	tok := g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-tele"})
	bob := g.mustConnect(connOpts{clientID: "bob-phone", token: tok})
	if rc := bob.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] != 1 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	st := g.openStream(t, tok, "devices/thermo-1/telemetry/#")
	carolTok := g.rpt("carol-phone", "carol", perm{"thermo-1/telemetry", "s-carol"})
	carol := g.mustConnect(connOpts{clientID: "carol-phone", token: carolTok})
	if rc := carol.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] != 1 {
		t.Fatalf("carol's subscribe: %s", hexCode(rc[0]))
	}

	g.apply(t, store.Batch{Delete: store.Deletions{Grants: []string{"s-tele"}}})
	if code := bob.expectDisconnect(t); code != 0x87 {
		t.Errorf("DISCONNECT %s, want 0x87", hexCode(code))
	}
	if l := st.waitEnd(t); !strings.Contains(l, "share_revoked") {
		t.Errorf("end event: %s", l)
	}
	if code, _ := g.connect(connOpts{clientID: "bob-phone", token: tok}); code != 0x87 {
		t.Errorf("reconnect with the RPT of a deleted share: CONNACK %s, want 0x87", hexCode(code))
	}
	if code, body := g.curl(t, "-H", "Accept: text/event-stream", "-H", "Authorization: Bearer "+tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/%23")); code != "401" || !strings.Contains(body, "share") {
		t.Errorf("event stream with the RPT of a deleted share: %s %s", code, body)
	}
	// Carol's share stands: her session still gets readings.
	t1 := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	t1.publish(t, "devices/thermo-1/telemetry/temp", "after", 1)
	carol.expectMsg(t, "devices/thermo-1/telemetry/temp", "after")
}

// A share made to someone else, or expired, grants nothing: the RPT that
// presents it is refused.
func TestShareForSomeoneElseOrExpiredGrantsNothing(t *testing.T) {
	g := startHTTP(t)
	b := shareParties()
	expired := share("s-old", "bob", "telemetry", "sub")
	expired.Expires = time.Now().Add(-time.Minute)
	b.Grants = []store.Grant{share("s-carol", "carol", "telemetry", "sub"), expired}
	g.apply(t, b)
	for _, c := range []struct {
		name string
		tok  string
	}{
		{"carol's share presented by bob", g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-carol"})},
		{"an expired share", g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-old"})},
		{"a share of another resource", g.rpt("carol-phone", "carol", perm{"thermo-2/telemetry", "s-carol"})},
	} {
		client := "bob-phone"
		if strings.Contains(c.name, "another") {
			client = "carol-phone"
		}
		if code, _ := g.connect(connOpts{clientID: client, token: c.tok}); code != 0x87 {
			t.Errorf("%s: CONNACK %s, want 0x87", c.name, hexCode(code))
		}
		if code, body := g.curl(t, "-H", "Accept: text/event-stream", "-H", "Authorization: Bearer "+c.tok, g.httpURL("/v1/topics/devices/thermo-1/telemetry/%23")); code != "401" || !strings.Contains(body, "share") {
			t.Errorf("%s: event stream %s %s", c.name, code, body)
		}
	}
}

// A grantee whose account is disabled, or whose tokens are revoked, loses
// their live sessions at once.
func TestShareGranteeDisabledOrRevoked(t *testing.T) {
	g := startHTTP(t)
	b := shareParties()
	b.Grants = []store.Grant{share("s-bob", "bob", "telemetry", "sub"), share("s-carol", "carol", "telemetry", "sub")}
	g.apply(t, b)
	bobTok := g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-bob"})
	carolTok := g.rpt("carol-phone", "carol", perm{"thermo-1/telemetry", "s-carol"})
	bob := g.mustConnect(connOpts{clientID: "bob-phone", token: bobTok})
	bobStream := g.openStream(t, bobTok, "devices/thermo-1/telemetry/#")
	carol := g.mustConnect(connOpts{clientID: "carol-phone", token: carolTok})
	carolStream := g.openStream(t, carolTok, "devices/thermo-1/telemetry/#")

	g.apply(t, store.Batch{Users: []store.User{{ID: "bob", Status: store.UserDisabled}}})
	if code := bob.expectDisconnect(t); code != 0x87 {
		t.Errorf("bob disabled: DISCONNECT %s, want 0x87", hexCode(code))
	}
	if l := bobStream.waitEnd(t); !strings.Contains(l, "user_disabled") {
		t.Errorf("bob disabled: end event %s", l)
	}
	if code, _ := g.connect(connOpts{clientID: "bob-phone", token: bobTok}); code != 0x87 {
		t.Errorf("bob disabled, reconnect: CONNACK %s, want 0x87", hexCode(code))
	}

	now := time.Now()
	g.apply(t, store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeSubject, Value: "carol", RevokedAt: now, ExpiresAt: now.Add(2 * time.Hour)}}})
	if code := carol.expectDisconnect(t); code != 0x87 {
		t.Errorf("carol revoked: DISCONNECT %s, want 0x87", hexCode(code))
	}
	if l := carolStream.waitEnd(t); !strings.Contains(l, "revoked") {
		t.Errorf("carol revoked: end event %s", l)
	}
}
