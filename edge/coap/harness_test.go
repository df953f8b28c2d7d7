package coap

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// testServer is a CoAP front end on loopback over an in-memory store, for
// what the gateway's configuration does not reach (Options set directly,
// internal counts). PSK devices dev-0 .. dev-(n-1), class thermostat.
type testServer struct {
	*Server
	st   *store.Store
	logs *logBuf
}

// logBuf keeps what the server logged, for tests that count its lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func pskIdentity(i int) string { return fmt.Sprintf("dev-%d-identity", i) }
func pskKey(i int) string      { return fmt.Sprintf("dev-%d-secret-key-0123456789abcdef", i)[:32] }

func startTestServer(t *testing.T, devices int, o Options) *testServer {
	t.Helper()
	logs := &logBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	st, err := store.Open(store.Options{InMemory: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := &store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "alice", Status: store.UserActive}}}
	for i := range devices {
		b.Devices = append(b.Devices, store.Device{ID: fmt.Sprintf("dev-%d", i), Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, PSKIdentity: pskIdentity(i), PSK: []byte(pskKey(i))})
	}
	if _, err := st.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	auth := &authn.Authenticator{Store: st, Verifier: authn.NewVerifier(authn.VerifierConfig{})}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = 256 << 10
	ms := mqtt.New(&mqtt.Options{Capabilities: caps, InlineClient: true, Logger: log})
	br, err := broker.New(ms, auth, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ms.Close() })
	inline, err := NewInline(ms)
	if err != nil {
		t.Fatal(err)
	}
	o.DTLSListen, o.Store, o.Auth, o.Broker, o.Log = "127.0.0.1:0", st, auth, inline, log
	o.MaxPacketSize = int(caps.MaximumPacketSize)
	o.Throttle, o.Connects, o.Now = br.Throttle, br.Connects, br.Now
	o.Counters = Counters{Denied: &br.Counters.Denied, Throttled: &br.Counters.Throttled, MessagesOut: &br.Counters.MessagesOut, BytesOut: &br.Counters.BytesOut}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &testServer{Server: s, st: st, logs: logs}
}

// dialPSK opens a DTLS session as dev-i (go-coap's own block-wise off, so
// blocks are sent as the test writes them).
func (ts *testServer) dialPSK(t *testing.T, i int) *udpClient.Conn {
	t.Helper()
	return ts.dialIdentity(t, pskIdentity(i), pskKey(i))
}

func (ts *testServer) dialIdentity(t *testing.T, identity, key string) *udpClient.Conn {
	t.Helper()
	cc, err := ts.tryDial(identity, key)
	if err != nil {
		t.Fatalf("handshake as %s: %v", identity, err)
	}
	return cc
}

func (ts *testServer) tryDial(identity, key string) (*udpClient.Conn, error) {
	cc, err := coapdtls.Dial(ts.Addr(), coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)),
		options.WithBlockwise(false, 0, time.Second))
	if err != nil {
		return nil, err
	}
	// pion shakes hands on first use: a ping makes the session now.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cc.Ping(ctx); err != nil {
		_ = cc.Close()
		return nil, err
	}
	return cc, nil
}

// handshake starts a DTLS handshake as identity with key and gives up
// after wait: what a failing handshake needs (pion's client would retry for
// long).
func (ts *testServer) handshake(identity, key string, wait time.Duration) error {
	raddr, err := net.ResolveUDPAddr("udp", ts.Addr())
	if err != nil {
		return err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer conn.Close()
	dc, err := piondtls.ClientWithOptions(conn, raddr,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		return err
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return dc.HandshakeContext(ctx)
}

// do sends one request and returns the answer's code.
func do(t *testing.T, cc *udpClient.Conn, code codes.Code, path string, body []byte, opts ...message.Option) (*pool.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := cc.NewPostRequest(ctx, path, message.TextPlain, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	req.SetCode(code)
	if body != nil {
		req.SetBody(bytes.NewReader(body))
	}
	return cc.Do(req)
}

// waitFor polls cond until it holds (a bound for a failure, not a timing).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
