package edge_test

import (
	"context"
	"crypto/tls"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// The cloud bridge against Debian's Mosquitto as the manufacturer's cloud:
// TLS with the gateway's client certificate, an ACL confining the gateway
// to gateways/test-gw/#, and a cloud application ("cloud-app") on the same
// broker.

var bridgeRules = []config.BridgeRule{
	{Filter: "devices/+/telemetry/#", Direction: "out", QoS: 1},
	{Filter: "devices/+/status", Direction: "out", QoS: 0},
	{Filter: "owners/#", Direction: "out", QoS: 1}, // outside the bridge class: never sent
	{Filter: "devices/#", Direction: "in", QoS: 1}, // the class lets only commands in
}

func startBridged(t *testing.T, protocol string, rules []config.BridgeRule, mods ...gwOpt) (*gw, *testenv.Cloud) {
	t.Helper()
	return bridgedTo(t, testenv.StartCloud(t, "test-gw"), protocol, rules, mods...)
}

// bridgedTo starts a gateway bridged to cloud.
func bridgedTo(t *testing.T, cloud *testenv.Cloud, protocol string, rules []config.BridgeRule, mods ...gwOpt) (*gw, *testenv.Cloud) {
	t.Helper()
	r := cloud.Remote("cloud", rules...)
	r.Protocol = protocol
	opts := append([]gwOpt{func(c *config.Config) {
		c.Bridge.Remotes = []config.Remote{r}
	}}, mods...)
	g := startGateway(t, opts...)
	return g, cloud
}

// waitBridge waits until the first remote's status satisfies ok.
func (g *gw) waitBridge(t *testing.T, what string, ok func(bridge.Status) bool) bridge.Status {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for {
		st := g.g.Bridge.Status()[0]
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge never %s: %+v\nlogs:\n%s", what, st, g.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connected(s bridge.Status) bool { return s.State == "connected" }

// cloudApp connects the cloud application to the cloud broker and
// subscribes it to filter.
func cloudApp(t *testing.T, cloud *testenv.Cloud, filter string) *client {
	t.Helper()
	return cloudAppConnect(t, cloud, filter, false)
}

// cloudAppSession is cloudApp with a session the (persistent) cloud keeps
// while the application is away and across the cloud's restart: what the
// bridge forwards meanwhile waits for it.
func cloudAppSession(t *testing.T, cloud *testenv.Cloud, filter string) *client {
	t.Helper()
	return cloudAppConnect(t, cloud, filter, true)
}

func cloudAppConnect(t *testing.T, cloud *testenv.Cloud, filter string, keep bool) *client {
	t.Helper()
	tc, err := tls.Dial("tcp", cloud.Addr, cloud.AppTLS())
	if err != nil {
		t.Fatal(err)
	}
	nc := testenv.LockedConn(tc)
	cl := &client{msgs: make(chan *paho.Publish, 1000), disconnect: make(chan *paho.Disconnect, 1), conn: nc}
	pc := paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cp := &paho.Connect{ClientID: "cloud-app", KeepAlive: 30, CleanStart: !keep}
	if keep {
		expiry := uint32(3600)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	if ca, err := pc.Connect(ctx, cp); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("cloud app connect: %v %+v", err, ca)
	}
	cl.c, cl.done = pc, pc.Done()
	t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil || sa.Reasons[0] >= 0x80 {
		t.Fatalf("cloud app subscribe: %v %+v\ncloud log:\n%s", err, sa, cloud.Log.String())
	}
	return cl
}

func (c *client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(opTimeout):
		t.Fatal("no message")
	}
	return nil
}

func userProp(p *paho.Publish, key string) string {
	if p.Properties == nil {
		return ""
	}
	return p.Properties.User.Get(key)
}

func TestBridgeBothWays(t *testing.T) {
	g, cloud := startBridged(t, "5", bridgeRules)
	app := cloudApp(t, cloud, "gateways/test-gw/#")
	g.waitBridge(t, "connected", connected)

	// Out: a reading reaches the cloud under the gateway's prefix, with the
	// device's id; the device's PUBACK came after the queue had it.
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	if rc := dev.publish(t, "devices/thermo-1/telemetry/temp", "21.5", 1); rc != 0 {
		t.Fatalf("publish: 0x%02x", rc)
	}
	m := app.next(t)
	if m.Topic != "gateways/test-gw/devices/thermo-1/telemetry/temp" || string(m.Payload) != "21.5" || userProp(m, bridge.DeviceProperty) != "thermo-1" {
		t.Fatalf("cloud got %s %q device %q", m.Topic, m.Payload, userProp(m, bridge.DeviceProperty))
	}
	// QoS 0 status goes out too (best effort, from memory).
	dev.publish(t, "devices/thermo-1/status", "online", 0)
	if m := app.next(t); m.Topic != "gateways/test-gw/devices/thermo-1/status" || string(m.Payload) != "online" {
		t.Fatalf("cloud got %s %q", m.Topic, m.Payload)
	}
	// An out rule the bridge class does not allow sends nothing.
	dev.publish(t, "owners/alice/alerts", "smoke", 1)
	g.waitBridge(t, "refused the alert", func(s bridge.Status) bool { return s.RefusedOut == 1 })

	// In: a command from the cloud reaches the device.
	if rc := dev.subscribe(t, "devices/thermo-1/commands/#"); rc[0] >= 0x80 {
		t.Fatalf("device subscribe: 0x%02x", rc[0])
	}
	app.publish(t, "gateways/test-gw/devices/thermo-1/commands/set", "22", 1)
	dev.expectMsg(t, "devices/thermo-1/commands/set", "22")

	// A cloud publish outside the bridge class (forged telemetry) is
	// refused, counted, logged, and reaches nobody.
	svc := g.telemetry(t)
	app.publish(t, "gateways/test-gw/devices/thermo-1/telemetry/temp", "forged", 1)
	st := g.waitBridge(t, "refused the forged reading", func(s bridge.Status) bool { return s.RefusedIn == 1 })
	if st.Received != 1 {
		t.Errorf("received %d from the cloud, want only the command", st.Received)
	}
	if !strings.Contains(g.logs.String(), "bridge class may not publish") {
		t.Errorf("the refusal was not logged:\n%s", g.logs.String())
	}
	dev.publish(t, "devices/thermo-1/telemetry/marker", "m", 1)
	for {
		m := svc.next(t)
		if string(m.Payload) == "forged" {
			t.Fatal("the forged reading reached a local subscriber")
		}
		if m.Topic == "devices/thermo-1/telemetry/marker" {
			break
		}
	}
	g.waitBridge(t, "forwarded the marker", func(s bridge.Status) bool { return s.Forwarded == 3 && s.Queued == 0 })
}

// MQTT 3.1.1 to the cloud: no user properties, so the rule puts the device
// in the topic.
func TestBridgeV311DeviceInTopic(t *testing.T) {
	g, cloud := startBridged(t, "3.1.1", []config.BridgeRule{{Filter: "devices/+/telemetry/#", Direction: "out", QoS: 1, DeviceInTopic: true}})
	app := cloudApp(t, cloud, "gateways/test-gw/#")
	g.waitBridge(t, "connected", connected)
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	dev.publish(t, "devices/thermo-1/telemetry/temp", "19", 1)
	if m := app.next(t); m.Topic != "gateways/test-gw/thermo-1/devices/thermo-1/telemetry/temp" || string(m.Payload) != "19" {
		t.Fatalf("cloud got %s %q", m.Topic, m.Payload)
	}
}

// While the cloud is away QoS 1 readings wait on disk, in order; when it
// comes back they all arrive. A class change while they wait is applied at
// the moment they are sent: what the bridge may no longer send is dropped,
// counted, never sent.
func TestBridgeOutageAndQueuedPermission(t *testing.T) {
	g, cloud := bridgedTo(t, testenv.StartPersistentCloud(t, "test-gw"), "5", bridgeRules)
	g.waitBridge(t, "connected", connected)
	_ = cloudAppSession(t, cloud, "gateways/test-gw/#").c.Disconnect(&paho.Disconnect{})
	cloud.Shutdown()
	g.waitBridge(t, "noticed the outage", func(s bridge.Status) bool { return s.State != "connected" })
	dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	const n = 200
	for i := range n {
		if rc := dev.publish(t, "devices/thermo-1/telemetry/seq", strings.Repeat("x", i%7)+"|"+itoa(i), 1); rc != 0 {
			t.Fatalf("publish %d: 0x%02x", i, rc)
		}
	}
	if st := g.g.Bridge.Status()[0]; st.Queued != n {
		t.Fatalf("%d queued during the outage, want %d", st.Queued, n)
	}
	cloud.Start()
	app := cloudAppSession(t, cloud, "gateways/test-gw/#")
	g.waitBridge(t, "drained", func(s bridge.Status) bool { return s.Queued == 0 && s.State == "connected" })
	for i := range n {
		m := app.next(t)
		if want := strings.Repeat("x", i%7) + "|" + itoa(i); string(m.Payload) != want {
			t.Fatalf("message %d is %q, want %q (order lost)", i, m.Payload, want)
		}
	}

	// Now narrow the class while messages wait.
	_ = app.c.Disconnect(&paho.Disconnect{})
	cloud.Shutdown()
	g.waitBridge(t, "noticed the second outage", func(s bridge.Status) bool { return s.State != "connected" })
	for i := range 10 {
		dev.publish(t, "devices/thermo-1/telemetry/seq", "late-"+itoa(i), 1)
	}
	narrow := store.DeviceClass{Name: "bridge", Permissions: []policy.Rule{{Filter: "devices/+/commands/#", Actions: policy.Publish}}}
	if _, err := g.g.Store.Apply(&store.Batch{Classes: []store.DeviceClass{narrow}}, nil); err != nil {
		t.Fatal(err)
	}
	before := g.g.Bridge.Status()[0].RefusedOut
	cloud.Start()
	app2 := cloudAppSession(t, cloud, "gateways/test-gw/#")
	st := g.waitBridge(t, "drained after the class change", func(s bridge.Status) bool { return s.Queued == 0 && s.State == "connected" })
	if st.RefusedOut-before != 10 {
		t.Fatalf("refused %d queued messages, want 10", st.RefusedOut-before)
	}
	// The class back as it was: the first thing the cloud gets is the
	// marker sent after it, none of the refused ones.
	if _, err := g.g.Store.Apply(&store.Batch{Classes: demo.Classes()}, nil); err != nil {
		t.Fatal(err)
	}
	dev.publish(t, "devices/thermo-1/telemetry/seq", "marker", 1)
	for {
		// The application's session may first get again what it had not
		// acknowledged before it left (the broker's QoS 1, not the bridge).
		m := app2.next(t)
		if strings.HasPrefix(string(m.Payload), "late-") {
			t.Fatalf("the cloud received %s %q after the class forbade it", m.Topic, m.Payload)
		}
		if string(m.Payload) == "marker" {
			break
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The queue's bound while the cloud is away, both policies, counted:
// refuse_new answers the device 0x97 (it keeps the message), drop_oldest
// drops whole segments of the oldest and the cloud later gets the newest,
// in order.
func TestBridgeQueueFull(t *testing.T) {
	small := func(policy string) gwOpt {
		return func(c *config.Config) {
			c.Bridge.Queue.MaxBytes, c.Bridge.Queue.SegmentBytes, c.Bridge.Queue.WhenFull = 256<<10, 64<<10, policy
		}
	}
	payload := strings.Repeat("r", 4000)
	const n = 100 // 400 KB: more than the 256 KiB the queue may hold
	for _, policy := range []string{"refuse_new", "drop_oldest"} {
		t.Run(policy, func(t *testing.T) {
			g, cloud := bridgedTo(t, testenv.StartPersistentCloud(t, "test-gw"), "5", bridgeRules, small(policy))
			g.waitBridge(t, "connected", connected)
			_ = cloudAppSession(t, cloud, "gateways/test-gw/#").c.Disconnect(&paho.Disconnect{})
			cloud.Shutdown()
			g.waitBridge(t, "noticed the outage", func(s bridge.Status) bool { return s.State != "connected" })
			dev := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
			var accepted []int
			refused := 0
			for i := range n {
				switch rc := dev.publish(t, "devices/thermo-1/telemetry/big", itoa(i)+"|"+payload, 1); rc {
				case 0:
					accepted = append(accepted, i)
				case 0x97:
					refused++
				default:
					t.Fatalf("publish %d: 0x%02x", i, rc)
				}
			}
			st := g.g.Bridge.Status()[0]
			if st.QueuedBytes > 256<<10 {
				t.Fatalf("queue holds %d bytes, over max_bytes", st.QueuedBytes)
			}
			switch policy {
			case "refuse_new":
				if refused == 0 || st.Dropped != 0 || int(st.Queued) != len(accepted) {
					t.Fatalf("refused %d, accepted %d, status %+v", refused, len(accepted), st)
				}
			case "drop_oldest":
				if refused != 0 || st.Dropped == 0 || int(st.Queued)+int(st.Dropped) != n {
					t.Fatalf("refused %d, status %+v: want drops and queued+dropped = %d", refused, st, n)
				}
			}
			cloud.Start()
			app := cloudAppSession(t, cloud, "gateways/test-gw/#")
			g.waitBridge(t, "drained", func(s bridge.Status) bool { return s.Queued == 0 && s.State == "connected" })
			// What the cloud gets: the oldest under refuse_new, the newest
			// under drop_oldest; in order either way.
			want := accepted
			if policy == "drop_oldest" {
				want = accepted[st.Dropped:]
			}
			for _, i := range want {
				m := app.next(t)
				if got, _, _ := strings.Cut(string(m.Payload), "|"); got != itoa(i) {
					t.Fatalf("cloud got message %s, want %d", got, i)
				}
			}
		})
	}
}
