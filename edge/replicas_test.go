package edge_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/pgtest"
	"github.com/edgeid/edgeid/internal/testenv"
	"github.com/edgeid/edgeid/store"
	"github.com/edgeid/edgeid/store/pgstore"
)

// replica is one edgeid-authority process of a fleet: its own storage
// handle on the shared database, its own HTTPS server.
type replica struct {
	a    *authority.Authority
	st   *pgstore.Store
	srv  *httptest.Server
	logs *syncBuf
	down atomic.Bool
	// streams counts the gateways' event streams it is serving.
	streams atomic.Int64
}

// balancer is a TCP load balancer in front of the replicas: TLS passes
// through (so a device's client certificate reaches the authority, as
// mTLS call-home needs), each new connection goes to the next live replica.
type balancer struct {
	ln       net.Listener
	replicas []*replica
	next     atomic.Uint64
	mu       sync.Mutex
	conns    map[*replica][]net.Conn
}

func startBalancer(t *testing.T) *balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, conns: map[*replica][]net.Conn{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.forward(c)
		}
	}()
	return b
}

func (b *balancer) forward(c net.Conn) {
	b.mu.Lock()
	replicas := slices.Clone(b.replicas)
	b.mu.Unlock()
	for range len(replicas) {
		r := replicas[b.next.Add(1)%uint64(len(replicas))]
		if r.down.Load() {
			continue
		}
		up, err := net.Dial("tcp", r.srv.Listener.Addr().String())
		if err != nil {
			continue
		}
		b.mu.Lock()
		b.conns[r] = append(b.conns[r], c, up)
		b.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		_, _ = io.Copy(c, up)
		c.Close()
		return
	}
	c.Close() // no replica: the gateways back off and try again
}

// kill stops replica r as a crash would: its connections drop mid-stream.
func (b *balancer) kill(r *replica) {
	r.down.Store(true)
	b.mu.Lock()
	for _, c := range b.conns[r] {
		c.Close()
	}
	b.mu.Unlock()
	r.srv.CloseClientConnections()
	r.a.Close()
	r.srv.Close()
}

func (b *balancer) url() string { return "https://" + b.ln.Addr().String() }

// startReplica starts an authority on dsn whose public URL is the
// balancer's. httptest servers all present the same certificate, so the
// gateways' pinned fingerprint fits every replica, as replicas behind one
// name share one certificate.
func startReplica(t *testing.T, b *balancer, dsn, name string) *replica {
	t.Helper()
	st, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	r := &replica{st: st, logs: &syncBuf{}}
	var h http.Handler
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == cloudsync.PathEvents {
			r.streams.Add(1)
			defer r.streams.Add(-1)
		}
		h.ServeHTTP(w, req)
	}))
	r.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	cfg := authority.Config{URL: b.url(), TokenAudience: "edgeid", TokenTTL: time.Hour,
		MaxTokenLifetime: 24 * time.Hour, EnrollCodeTTL: time.Hour, HeartbeatInterval: time.Second}
	if r.a, err = authority.New(cfg, st, slog.New(slog.NewTextHandler(r.logs, nil)).With("replica", name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.a.Close)
	h = authority.NewHandler(r.a, testenv.AdminToken)
	b.mu.Lock()
	b.replicas = append(b.replicas, r)
	b.mu.Unlock()
	return r
}

// oauth posts to an OAuth endpoint of replica r directly, as device (key),
// with a client assertion for the fleet's token endpoint.
func (r *replica) oauth(t *testing.T, aud string, key *demo.Issuer, device, path string, form url.Values) map[string]any {
	t.Helper()
	now := time.Now()
	a, _ := key.Mint(map[string]any{"iss": device, "sub": device, "aud": aud + "/oauth/token", "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(now.UnixNano())}, nil)
	form.Set("client_id", device)
	form.Set("client_assertion_type", authority.ClientAssertionType)
	form.Set("client_assertion", a)
	resp, err := syncclient.HTTPClient(testenv.Fingerprint(r.srv)).PostForm(r.srv.URL+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return m
}

// Issue 16, done-when: two authority replicas on one PostgreSQL and three
// gateways behind a load balancer. A device is paired through one replica
// and revoked through the other: every gateway cuts it. One replica is
// killed: the gateways' streams move to the other and no change is lost.
func TestReplicasOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	if err := pgstore.Migrate(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	lb := startBalancer(t)
	r1 := startReplica(t, lb, dsn, "r1")
	r2 := startReplica(t, lb, dsn, "r2")
	fp := testenv.Fingerprint(r1.srv)

	speaker, _ := demo.NewIssuer("speaker-1", "speaker-1-key")
	pub, _ := speaker.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	testenv.Admin(t, r2.srv.URL, fp, testenv.AdminToken, "POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Users:   []store.User{{ID: "alice", Status: store.UserActive}},
		Devices: []store.Device{{ID: "speaker-1", Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON, Site: "home"}}})

	// Two gateways of alice's site and one of none: all three hold the speaker.
	var gws []*gw
	for i, site := range []string{"home", "home", ""} {
		enrollment := testenv.EnrollSite(t, r1.a, lb.url(), fp, fmt.Sprintf("gw-%d", i+1), site, "test-board")
		gws = append(gws, startGateway(t, func(c *configT) { c.StateDir = t.TempDir(); c.Sync.Enrollment = enrollment }))
	}
	for i, g := range gws {
		waitFor(t, fmt.Sprintf("the speaker at gateway %d", i+1), func() bool { _, err := g.g.Store.Device("speaker-1"); return err == nil })
	}

	// Pairing: started and approved at r1, the token collected at r2.
	da := r1.oauth(t, lb.url(), speaker, "speaker-1", "/oauth/device_authorization", url.Values{})
	code, _ := da["user_code"].(string)
	if err := r1.a.DecidePairing(code, "alice", true); err != nil {
		t.Fatalf("approve at r1 (%v): %v", da, err)
	}
	m := r2.oauth(t, lb.url(), speaker, "speaker-1", "/oauth/token", url.Values{"grant_type": {authority.DeviceCodeGrant}, "device_code": {fmt.Sprint(da["device_code"])}})
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("token at r2 for a pairing approved at r1: %v", m)
	}
	discs := make(chan byte, len(gws))
	for i, g := range gws {
		waitFor(t, fmt.Sprintf("the pairing at gateway %d", i+1), func() bool { d, _ := g.g.Store.Device("speaker-1"); return d.Owner == "alice" })
		c := paho.NewClient(paho.ClientConfig{Conn: g.dial(connOpts{}), AuthHandler: &prover{key: speaker.Key, clientID: "speaker-1"}, OnClientError: func(error) {},
			OnServerDisconnect: func(d *paho.Disconnect) { discs <- d.ReasonCode }})
		ca, err := c.Connect(g.ctx(), &paho.Connect{ClientID: "speaker-1", KeepAlive: 30, CleanStart: true,
			Properties: &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(tok)}})
		if err != nil || ca.ReasonCode != 0 {
			t.Fatalf("connect to gateway %d with the token from r2: %v", i+1, err)
		}
	}

	// Revoked through r2: every gateway ends its session.
	testenv.Admin(t, r2.srv.URL, fp, testenv.AdminToken, "POST", "/admin/v1/devices/speaker-1/revoke?reason=stolen", nil)
	for range gws {
		select {
		case code := <-discs:
			if code != 0x87 {
				t.Errorf("revocation DISCONNECT %s, want 0x87", hexCode(code))
			}
		case <-time.After(20 * time.Second):
			t.Fatal("not every gateway cut the device revoked through r2")
		}
	}

	// The replica serving most of the gateways' streams dies; changes go on
	// at the other meanwhile; every gateway gets all of them.
	waitFor(t, "every gateway's event stream", func() bool { return r1.streams.Load()+r2.streams.Load() == int64(len(gws)) })
	dead, live := r1, r2
	if r2.streams.Load() > r1.streams.Load() {
		dead, live = r2, r1
	}
	moved := dead.streams.Load()
	lb.kill(dead)
	var last uint64
	for i := range 5 {
		rev, err := live.a.Apply(&store.Batch{Devices: []store.Device{{ID: fmt.Sprintf("late-%d", i), Class: "thermostat", Status: store.DeviceActive}}}, "test")
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	for i, g := range gws {
		waitLong(t, fmt.Sprintf("gateway %d at the head through the live replica", i+1), func() bool { cur, _ := g.g.Store.Cursor(); return cur.Seq >= last })
		for j := range 5 {
			if _, err := g.g.Store.Device(fmt.Sprintf("late-%d", j)); err != nil {
				t.Errorf("gateway %d lacks late-%d after the failover: %v", i+1, j, err)
			}
		}
	}
	waitFor(t, "the moved streams at the live replica", func() bool { return live.streams.Load() == int64(len(gws)) })
	t.Logf("%d of %d streams moved to the live replica", moved, len(gws))
}
