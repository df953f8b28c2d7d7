package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
)

// gw is a real gateway on loopback with the demo bundle imported.
type gw struct {
	t     testing.TB
	g     *edge.Gateway
	cfg   config.Config
	iss   *demo.Issuer
	files demo.Files
	logs  *syncBuf
}

// syncBuf is a log buffer safe for concurrent writers.
type syncBuf = testenv.Buf

type configT = config.Config

type gwOpt func(*config.Config)

func startGateway(t *testing.T, opts ...gwOpt) *gw { return startGatewayTB(t, opts...) }

func startGatewayTB(t testing.TB, opts ...gwOpt) *gw {
	t.Helper()
	files, err := demo.WriteTLS(filepath.Join(t.TempDir(), "tls"), "thermo-2")
	if err != nil {
		t.Fatal(err)
	}
	mods := []func(*config.Config){func(cfg *config.Config) {
		cfg.MQTT.TLS = config.TLS{Listen: "127.0.0.1:0", Cert: files.ServerCert, Key: files.ServerKey}
		cfg.Auth.ClockSkew = 0
		cfg.Throttle = config.Throttle{} // benchmarks publish fast; TestThrottle turns it on
		// testenv turns off the connect rate (TestConnectRatePerSource turns
		// it on), raises the per-source half-open cap (TestHalfOpenCapsGateway
		// sets its own) and turns metrics off (TestMetrics turns them on).
	}}
	for _, o := range opts {
		mods = append(mods, o)
	}
	logs := &syncBuf{}
	env := testenv.GatewayLog(t, logs, mods...)
	g, cfg := env.G, env.Config
	iss := testenv.Issuer(t)
	if cfg.Sync.Enrollment != "" {
		// Enrolled gateways get their records from the authority.
		return &gw{t: t, g: g, cfg: cfg, iss: iss, files: files, logs: logs}
	}
	testenv.ApplyDemo(t, g, iss, files.DeviceFingerprint,
		store.Device{ID: "thermo-3", Class: "thermostat", Owner: "alice", Status: store.DeviceSuspended})
	return &gw{t: t, g: g, cfg: cfg, iss: iss, files: files, logs: logs}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// token mints a token for device acting for sub with the class's full scope,
// then lets mod change the claims.
func (g *gw) token(device, sub string, mod func(map[string]any)) string {
	g.t.Helper()
	class := "thermostat"
	if device == "acme-cloud" {
		class = "service"
	}
	var scope string
	for _, c := range demo.Classes() {
		if c.Name == class {
			scope = demo.Scope(c, device, "alice")
		}
	}
	claims := g.iss.Claims(device, sub, "edgeid", scope, time.Hour)
	if mod != nil {
		mod(claims)
	}
	tok, err := g.iss.Mint(claims, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	return tok
}

func (g *gw) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	g.t.Cleanup(cancel)
	return ctx
}

// opTimeout bounds each client operation and wait. It is a liveness bound,
// not a timing assertion: generous, because make test runs packages side by
// side on two cores with the race detector.
const opTimeout = 30 * time.Second

func (g *gw) admin() *admin.Client { return admin.NewClient(g.cfg.Admin.Socket) }

func (g *gw) importJSON(v any) (admin.ImportResult, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		g.t.Fatal(err)
	}
	return g.admin().Import(context.Background(), raw)
}

// client is a paho MQTT 5 client that records what it receives.
type client struct {
	c          *paho.Client
	conn       net.Conn
	msgs       chan *paho.Publish
	disconnect chan *paho.Disconnect
	done       <-chan struct{}
}

type connOpts struct {
	tls      bool
	cert     *tls.Certificate
	clientID string
	token    string
	method   string // "ace" (default for a token), "password", or another method name
	will     *paho.WillMessage
}

func (g *gw) dial(o connOpts) net.Conn {
	g.t.Helper()
	if !o.tls {
		c, err := net.Dial("tcp", g.g.Addr("tcp"))
		if err != nil {
			g.t.Fatal(err)
		}
		return c
	}
	pem, err := os.ReadFile(g.files.CACert)
	if err != nil {
		g.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if o.cert != nil {
		tc.Certificates = []tls.Certificate{*o.cert}
	}
	c, err := tls.Dial("tcp", g.g.Addr("tls"), tc)
	if err != nil {
		g.t.Fatal(err)
	}
	return testenv.LockedConn(c) // paho.golang over TLS: see testenv.LockedConn
}

// connect opens an MQTT 5 session; it returns the CONNACK reason code and,
// when accepted, the client.
func (g *gw) connect(o connOpts) (byte, *client) {
	g.t.Helper()
	cl := &client{msgs: make(chan *paho.Publish, 100), disconnect: make(chan *paho.Disconnect, 1)}
	cl.conn = g.dial(o)
	pc := paho.NewClient(paho.ClientConfig{
		Conn: cl.conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { cl.disconnect <- d },
		OnClientError:      func(error) {},
	})
	cp := &paho.Connect{ClientID: o.clientID, KeepAlive: 30, CleanStart: true, WillMessage: o.will}
	if o.will != nil {
		cp.WillProperties = &paho.WillProperties{}
	}
	switch {
	case o.token == "":
	case o.method == "password":
		cp.Username, cp.UsernameFlag = o.clientID, true
		cp.Password, cp.PasswordFlag = []byte(o.token), true
	default:
		m := o.method
		if m == "" {
			m = "ace"
		}
		cp.Properties = &paho.ConnectProperties{AuthMethod: m, AuthData: []byte(o.token)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	ca, err := pc.Connect(ctx, cp)
	if ca == nil {
		g.t.Fatalf("connect %s: no CONNACK: %v", o.clientID, err)
	}
	if ca.ReasonCode >= 0x80 {
		return ca.ReasonCode, nil
	}
	cl.c, cl.done = pc, pc.Done()
	g.t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	return ca.ReasonCode, cl
}

func (g *gw) mustConnect(o connOpts) *client {
	g.t.Helper()
	code, cl := g.connect(o)
	if code != 0 {
		g.t.Fatalf("connect %s: CONNACK 0x%02x, want success; logs:\n%s", o.clientID, code, g.logs.String())
	}
	return cl
}

func (c *client) publish(t *testing.T, topic, payload string, qos byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	r, err := c.c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: qos})
	if r != nil {
		return r.ReasonCode
	}
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return 0
}

func (c *client) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.c.Subscribe(ctx, s)
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}

// expectMsg waits for a message on topic.
func (c *client) expectMsg(t *testing.T, topic, payload string) {
	t.Helper()
	timeout := time.After(opTimeout)
	for {
		select {
		case m := <-c.msgs:
			if m.Topic == topic && string(m.Payload) == payload {
				return
			}
		case <-timeout:
			t.Fatalf("no message %q on %s", payload, topic)
		}
	}
}

// expectNoMsg publishes a marker the client is allowed to receive after the
// one it must not receive; seeing the marker first proves the other was never delivered.
func (c *client) expectNoMsgBefore(t *testing.T, forbidden, markerTopic, markerPayload string) {
	t.Helper()
	timeout := time.After(opTimeout)
	for {
		select {
		case m := <-c.msgs:
			if m.Topic == forbidden {
				t.Fatalf("received %q on %s, which must not be delivered", m.Payload, m.Topic)
			}
			if m.Topic == markerTopic && string(m.Payload) == markerPayload {
				return
			}
		case <-timeout:
			t.Fatalf("marker %q on %s never arrived", markerPayload, markerTopic)
		}
	}
}

// expectDisconnect waits for the server's DISCONNECT and returns its reason code.
func (c *client) expectDisconnect(t *testing.T) byte {
	t.Helper()
	select {
	case d := <-c.disconnect:
		return d.ReasonCode
	case <-time.After(opTimeout):
		t.Fatal("server did not disconnect the client")
	}
	return 0
}

func hexCode(b byte) string { return fmt.Sprintf("0x%02x", b) }
