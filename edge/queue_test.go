package edge_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// No message outlives its permission: what is queued for a client (waiting
// for Receive Maximum, kept for a persistent session while its device is
// away, resent after a reconnect) is checked against the recipient's
// permission when it leaves the gateway, not only when it was queued.

// pclient is a paho MQTT 5 client with the session options these tests need.
type pclient struct {
	c       *paho.Client
	msgs    chan *paho.Publish
	present bool
	gone    chan *paho.Disconnect
	conn    net.Conn
}

type popts struct {
	token      string
	cleanStart bool
	expiry     uint32 // session expiry interval, seconds
	receiveMax uint16 // 0: the client's default
	manualAck  bool
	will       *paho.WillMessage
	willDelay  uint32
}

func (g *gw) pconnect(t *testing.T, id string, o popts) *pclient {
	t.Helper()
	conn, err := net.Dial("tcp", g.g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	pc := &pclient{msgs: make(chan *paho.Publish, 100), gone: make(chan *paho.Disconnect, 1), conn: conn}
	c := paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: o.manualAck,
		SendAcksInterval:           10 * time.Millisecond,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			pc.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { pc.gone <- d },
		OnClientError:      func(error) {},
	})
	props := &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(o.token), SessionExpiryInterval: &o.expiry}
	if o.receiveMax > 0 {
		props.ReceiveMaximum = &o.receiveMax
	}
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: o.cleanStart, Properties: props, WillMessage: o.will}
	if o.will != nil {
		cp.WillProperties = &paho.WillProperties{WillDelayInterval: &o.willDelay}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil || ca.ReasonCode != 0 {
		t.Fatalf("connect %s: %v %v; logs:\n%s", id, ca, err, g.logs.String())
	}
	pc.c, pc.present = c, ca.SessionPresent
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return pc
}

// drop closes the connection without DISCONNECT, as a device losing power does.
func (p *pclient) drop() { _ = p.conn.Close(); <-p.c.Done() }

// leave ends the connection with DISCONNECT 0x00, keeping the session.
func (p *pclient) leave() { _ = p.c.Disconnect(&paho.Disconnect{}); <-p.c.Done() }

func (p *pclient) sub(t *testing.T, filters ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := p.c.Subscribe(ctx, s)
	if err != nil || sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("subscribe %s refused with 0x%02x", filters[i], r)
		}
	}
}

func (p *pclient) pub(t *testing.T, topic, payload string, qos byte, props *paho.PublishProperties) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	r, err := p.c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos, Properties: props})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return 0
}

// next waits for the next message.
func (p *pclient) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-p.msgs:
		return m
	case <-time.After(opTimeout):
		t.Fatal("no message arrived")
	}
	return nil
}

// receiveUntil collects messages until one with marker as payload arrives.
func (p *pclient) receiveUntil(t *testing.T, marker string) []string {
	t.Helper()
	var got []string
	for {
		m := p.next(t)
		if string(m.Payload) == marker {
			return got
		}
		got = append(got, m.Topic+"="+string(m.Payload))
	}
}

// narrowClass imports the thermostat class without its commands rule.
func (g *gw) narrowClass(t *testing.T) {
	t.Helper()
	var c store.DeviceClass
	for _, dc := range demo.Classes() {
		if dc.Name == "thermostat" {
			c = dc
		}
	}
	var kept []policy.Rule
	for _, r := range c.Permissions {
		if !strings.Contains(r.Filter, "commands") {
			kept = append(kept, r)
		}
	}
	c.Permissions = kept
	if _, err := g.importJSON(store.Batch{Classes: []store.DeviceClass{c}}); err != nil {
		t.Fatal(err)
	}
}

// Issue 10.1: with Receive Maximum 1 one command is unacknowledged and two
// wait in the broker; the class then loses the commands permission. When
// the first is acknowledged, the waiting ones must not be delivered.
func TestQueuedMessagesAfterClassChange(t *testing.T) {
	g := startGateway(t)
	dev := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, receiveMax: 1, manualAck: true})
	dev.sub(t, "devices/thermo-1/commands/#", "devices/thermo-1/status")
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	for i := 1; i <= 3; i++ {
		if rc := cloud.pub(t, "devices/thermo-1/commands/set", fmt.Sprint("cmd-", i), 1, nil); rc != 0 {
			t.Fatalf("command %d: PUBACK 0x%02x", i, rc)
		}
	}
	first := dev.next(t)
	if string(first.Payload) != "cmd-1" {
		t.Fatalf("first delivery %q, want cmd-1", first.Payload)
	}
	g.narrowClass(t)
	waitFor(t, "condition", func() bool { return strings.Contains(g.logs.String(), "subscription dropped") })
	if err := dev.c.Ack(first); err != nil {
		t.Fatal(err)
	}
	// The device's own status topic is still allowed: the marker after the
	// queued commands proves they were discarded, not just late.
	if rc := dev.pub(t, "devices/thermo-1/status", "marker", 1, nil); rc != 0 {
		t.Fatalf("status publish: 0x%02x", rc)
	}
	m := dev.next(t)
	if string(m.Payload) != "marker" {
		t.Fatalf("received %s=%q after the class lost the permission", m.Topic, m.Payload)
	}
	_ = dev.c.Ack(m)
}

// Issue 10.3: a sleepy device (clean_start=0, session expiry) receives on
// wake the commands sent while it slept, in order, within its permission.
func TestSleepyDeviceReceivesCommandsOnWake(t *testing.T) {
	g := startGateway(t)
	tok := g.token("thermo-1", "thermo-1", nil)
	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600})
	dev.sub(t, "devices/thermo-1/commands/#", "devices/thermo-1/status")
	dev.drop()
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 1 })

	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	for i := 1; i <= 3; i++ {
		if rc := cloud.pub(t, "devices/thermo-1/commands/set", fmt.Sprint("cmd-", i), 1, nil); rc != 0 {
			t.Fatalf("command %d: PUBACK 0x%02x", i, rc)
		}
	}
	// Another device's command is not the sleeper's to receive.
	cloud.pub(t, "devices/thermo-9/commands/set", "not-yours", 1, nil)
	// mochi acknowledges a QoS 1 PUBLISH before it delivers it.
	waitFor(t, "3 queued", func() bool { return g.g.Broker.OfflineQueued() == 3 })

	dev = g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: false, expiry: 600})
	if !dev.present {
		t.Fatal("CONNACK session present = 0 for a kept session")
	}
	dev.pub(t, "devices/thermo-1/status", "marker", 1, nil)
	got := dev.receiveUntil(t, "marker")
	want := []string{"devices/thermo-1/commands/set=cmd-1", "devices/thermo-1/commands/set=cmd-2", "devices/thermo-1/commands/set=cmd-3"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("on wake received %v, want %v", got, want)
	}
	if n := g.g.Broker.Sessions.Offline(); n != 0 {
		t.Fatalf("%d offline sessions after the device came back", n)
	}
}

// The offline queue is bounded: past mqtt.offline_queue.messages the oldest
// is dropped (and counted); a message whose Message Expiry passed while the
// device slept is not delivered.
func TestOfflineQueueBoundsAndExpiry(t *testing.T) {
	g := startGateway(t, func(c *config.Config) { c.MQTT.OfflineQueue = config.OfflineQueue{Messages: 2, Bytes: 1 << 20} })
	tok := g.token("thermo-1", "thermo-1", nil)
	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600})
	dev.sub(t, "devices/thermo-1/commands/#", "devices/thermo-1/status")
	dev.leave()
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 1 })

	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	exp := uint32(1)
	cloud.pub(t, "devices/thermo-1/commands/set", "short-lived", 1, &paho.PublishProperties{MessageExpiry: &exp})
	for i := 1; i <= 2; i++ {
		cloud.pub(t, "devices/thermo-1/commands/set", fmt.Sprint("cmd-", i), 1, nil)
	}
	// three queued into a queue of two: the oldest (short-lived) is dropped.
	waitFor(t, "1 dropped", func() bool { return g.g.Broker.Counters.OfflineQueued.Load() == 3 })
	if d := g.g.Broker.Counters.OfflineDropped.Load(); d != 1 {
		t.Fatalf("offline dropped = %d, want 1", d)
	}
	cloud.pub(t, "devices/thermo-1/commands/set", "expiring", 1, &paho.PublishProperties{MessageExpiry: &exp})
	waitFor(t, "4 queued", func() bool { return g.g.Broker.Counters.OfflineQueued.Load() == 4 })
	if d := g.g.Broker.Counters.OfflineDropped.Load(); d != 2 {
		t.Fatalf("offline dropped = %d, want 2", d)
	}
	time.Sleep(2100 * time.Millisecond) // let "expiring" pass its 1 s Message Expiry (not a timing assertion)

	dev = g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: false, expiry: 600})
	dev.pub(t, "devices/thermo-1/status", "marker", 1, nil)
	got := dev.receiveUntil(t, "marker")
	if strings.Join(got, ",") != "devices/thermo-1/commands/set=cmd-2" {
		t.Fatalf("on wake received %v, want only cmd-2 (cmd-1 was dropped as oldest, then 'expiring' expired)", got)
	}
}

// Issue 10.2: messages queued for a persistent session are not delivered to
// a reconnect whose (narrower) credential does not allow them; a revocation
// ends the persistent session outright.
func TestPersistentSessionNarrowerTokenAndRevocation(t *testing.T) {
	g := startGateway(t)
	dev := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, expiry: 600})
	dev.sub(t, "devices/thermo-1/commands/#", "devices/thermo-1/status")
	dev.drop()
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	cloud.pub(t, "devices/thermo-1/commands/set", "for-the-old-token", 1, nil)

	narrow := g.token("thermo-1", "thermo-1", func(c map[string]any) {
		c["scope"] = "publish:devices/thermo-1/status subscribe:devices/thermo-1/status"
	})
	dev = g.pconnect(t, "thermo-1", popts{token: narrow, cleanStart: false, expiry: 600})
	if !dev.present {
		t.Fatal("session present = 0: the kept session was lost")
	}
	dev.pub(t, "devices/thermo-1/status", "marker", 1, nil)
	if got := dev.receiveUntil(t, "marker"); len(got) > 0 {
		t.Fatalf("narrower token received %v from the old session's queue", got)
	}

	// Now revoke while away: the kept session and its queue are discarded.
	dev.drop()
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	cloud.pub(t, "devices/thermo-1/status", "queued-status", 1, nil) // acme-cloud may not; refused
	dev2 := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, expiry: 600})
	dev2.sub(t, "devices/thermo-1/status", "devices/thermo-1/commands/#")
	dev2.drop()
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 1 })
	cloud.pub(t, "devices/thermo-1/commands/set", "before-revocation", 1, nil)
	waitFor(t, "1 queued", func() bool { return g.g.Broker.OfflineQueued() == 1 })
	if _, err := g.importJSON(store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "thermo-1",
		RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "condition", func() bool { return g.g.Broker.Sessions.Offline() == 0 })
	if n := g.g.Broker.OfflineQueued(); n != 0 {
		t.Fatalf("offline queue holds %d after revocation", n)
	}
	time.Sleep(1100 * time.Millisecond) // a new token's iat must be after revoked_at (seconds)
	dev3 := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: false, expiry: 600})
	if dev3.present {
		t.Fatal("session present = 1 after the device was revoked")
	}
	dev3.sub(t, "devices/thermo-1/status")
	dev3.pub(t, "devices/thermo-1/status", "marker", 1, nil)
	if got := dev3.receiveUntil(t, "marker"); len(got) > 0 {
		t.Fatalf("after revocation received %v", got)
	}
}

// A Will Delay Interval is honoured: a device that comes back within the
// delay sends no Will; one that stays away sends it once the delay is over;
// a device revoked meanwhile sends nothing.
func TestWillDelay(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	cloud.sub(t, "devices/+/telemetry/#")
	tok := g.token("thermo-1", "thermo-1", nil)
	will := &paho.WillMessage{Topic: "devices/thermo-1/telemetry/will", Payload: []byte("gone"), QoS: 1}

	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600, will: will, willDelay: 3})
	dev.drop()
	dev = g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: false, expiry: 600, will: will, willDelay: 2})
	dev.pub(t, "devices/thermo-1/telemetry/temp", "back", 1, nil)
	// The first connection's Will was cancelled by the reconnect; this one's
	// fires once its 2 s delay is over.
	dev.drop()
	got := cloud.receiveUntil(t, "gone")
	if strings.Join(got, ",") != "devices/thermo-1/telemetry/temp=back" {
		t.Fatalf("before the Will: %v", got)
	}
	select {
	case m := <-cloud.msgs:
		t.Fatalf("a second Will (or more) arrived: %s=%q", m.Topic, m.Payload)
	case <-time.After(3500 * time.Millisecond): // the first Will would have fired by now (not a timing assertion)
	}

	// Revoked during the delay: no Will.
	dev = g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true, expiry: 600, will: will, willDelay: 2})
	dev.drop()
	if _, err := g.importJSON(store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "thermo-1",
		RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the delay (not a timing assertion)
	// A token issued after the revocation is taken; its marker arrives with
	// no Will before it.
	dev = g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true})
	dev.pub(t, "devices/thermo-1/telemetry/temp", "marker", 1, nil)
	if got := cloud.receiveUntil(t, "marker"); len(got) > 0 {
		t.Fatalf("a revoked device's delayed Will was published: %v", got)
	}
}

// Issue 10.4: a session ends at its token's exp by the gateway's clock.
// auth.clock_skew (here the default 30 s) tolerates an issuer whose clock is
// ahead (nbf, iat); it is no leeway on exp.
func TestSessionEndsAtExpDespiteClockSkew(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t, func(c *config.Config) { c.Auth.ClockSkew = 30 * time.Second })
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	tok := g.token("thermo-1", "thermo-1", func(c map[string]any) { c["exp"] = exp.Unix() })
	dev := g.pconnect(t, "thermo-1", popts{token: tok, cleanStart: true})
	dev.sub(t, "devices/thermo-1/commands/#")
	time.Sleep(time.Until(exp) + 500*time.Millisecond) // past exp, well inside the 30 s skew (not a timing assertion)
	select {
	case d := <-dev.gone:
		if d.ReasonCode != 0x87 {
			t.Fatalf("DISCONNECT 0x%02x at exp, want 0x87", d.ReasonCode)
		}
	case <-dev.c.Done():
	default:
		// Not yet cut: a publish must still be refused.
		if rc := dev.pub(t, "devices/thermo-1/telemetry/temp", "late", 1, nil); rc == 0 {
			t.Fatal("a QoS 1 PUBLISH after exp was accepted")
		}
	}
	// And the same token cannot connect again.
	conn, err := net.Dial("tcp", g.g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ca, _ := c.Connect(ctx, &paho.Connect{ClientID: "thermo-1", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
	if ca == nil || ca.ReasonCode < 0x80 {
		t.Fatalf("an expired token connected: %+v", ca)
	}
}

// A session that expires before its Will's delay sends the Will when it
// ends (MQTT-3.1.3-9), whichever of mochi's two per-second sweeps (session
// expiry, delayed Wills) runs first.
func TestWillAtSessionExpiry(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	g := startGateway(t)
	cloud := g.pconnect(t, "acme-cloud", popts{token: g.token("acme-cloud", "acme-cloud", nil), cleanStart: true})
	cloud.sub(t, "devices/+/telemetry/#")
	for i := 0; i < 3; i++ {
		will := &paho.WillMessage{Topic: "devices/thermo-1/telemetry/will", Payload: []byte(fmt.Sprint("gone-", i)), QoS: 1}
		dev := g.pconnect(t, "thermo-1", popts{token: g.token("thermo-1", "thermo-1", nil), cleanStart: true, expiry: 1, will: will, willDelay: 60})
		dev.drop()
		if got := cloud.receiveUntil(t, fmt.Sprint("gone-", i)); len(got) > 0 {
			t.Fatalf("before the Will: %v", got)
		}
		waitFor(t, "session gone", func() bool { return g.g.Broker.Sessions.Offline() == 0 })
	}
}
