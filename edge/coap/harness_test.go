package coap

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	mqtt "github.com/mochi-mqtt/server/v2"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// testServer is a CoAP front end on loopback over an in-memory store, for
// what the gateway's configuration does not reach (Options set directly,
// internal counts). PSK devices dev-0 .. dev-(n-1), class thermostat;
// tokens from iss (audience "edgeid").
type testServer struct {
	*Server
	st   *store.Store
	logs *logBuf
	iss  *demo.Issuer
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
	iss, err := demo.NewIssuer("https://issuer.test", "k1")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := iss.Record()
	if err != nil {
		t.Fatal(err)
	}
	b := &store.Batch{Classes: demo.Classes(), Users: []store.User{{ID: "alice", Status: store.UserActive}}, Issuers: []store.Issuer{rec}}
	for i := range devices {
		b.Devices = append(b.Devices, store.Device{ID: fmt.Sprintf("dev-%d", i), Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, PSKIdentity: pskIdentity(i), PSK: []byte(pskKey(i))})
	}
	if _, err := st.Apply(b, nil); err != nil {
		t.Fatal(err)
	}
	// The gateway's defaults (config.Default), no clock skew.
	verifier := authn.NewVerifier(authn.VerifierConfig{Audiences: []string{"edgeid"}, MaxLifetime: 24 * time.Hour, MaxSize: 8 << 10, CacheSize: 20000})
	if err := verifier.SetIssuers(b.Issuers); err != nil {
		t.Fatal(err)
	}
	auth := &authn.Authenticator{Store: st, Verifier: verifier}
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
	return &testServer{Server: s, st: st, logs: logs, iss: iss}
}

// pskOptions are a DTLS client's options for a PSK session as identity.
func pskOptions(identity, key string) []piondtls.ClientOption {
	return []piondtls.ClientOption{
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
}

// keyDevice is a device registered with its own key pair, for plain UDP,
// and a token of alice's bound to that key.
type keyDevice struct {
	id    string
	key   jwk.Key
	token string
}

// addKeyDevice registers id, a thermostat of alice's, with a new key pair,
// and mints its bound token.
func (ts *testServer) addKeyDevice(t *testing.T, id string) *keyDevice {
	t.Helper()
	kp, err := demo.NewIssuer(id, id+"-key")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.Key.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pubJSON, _ := json.Marshal(pub)
	if _, err := ts.st.Apply(&store.Batch{Devices: []store.Device{{ID: id, Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PublicKey: pubJSON}}}, nil); err != nil {
		t.Fatal(err)
	}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	tok := ts.token(t, id, func(c map[string]any) { c["cnf"] = map[string]any{"jkt": base64.RawURLEncoding.EncodeToString(thumb)} })
	return &keyDevice{id: id, key: kp.Key, token: tok}
}

// token mints a token of alice's for device, a thermostat, with the class's
// full scope, then lets mod change the claims.
func (ts *testServer) token(t *testing.T, device string, mod func(map[string]any)) string {
	t.Helper()
	var scope string
	for _, c := range demo.Classes() {
		if c.Name == "thermostat" {
			scope = demo.Scope(c, device, "alice")
		}
	}
	claims := ts.iss.Claims(device, "alice", "edgeid", scope, time.Hour)
	if mod != nil {
		mod(claims)
	}
	tok, err := ts.iss.Mint(claims, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// authorize posts d's token to /authz-info over plain UDP.
func (ts *testServer) authorize(t *testing.T, d *keyDevice) {
	t.Helper()
	cc, err := udp.Dial(ts.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := cc.Post(ctx, PathAuthzInfo, message.TextPlain, strings.NewReader(d.token)); err != nil || resp.Code() != codes.Created {
		t.Fatalf("authz-info: %v %v", resp, err)
	}
}

// proofOption is the proof of r by d, as a request's option.
func (d *keyDevice) proofOption(t *testing.T, r Request) message.Option {
	t.Helper()
	r.Token = d.token
	p, err := Prove(d.key, r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return message.Option{ID: OptionProof, Value: p}
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
	return ts.tryDialWith(identity, key, options.WithBlockwise(false, 0, time.Second))
}

// tryDialWith is tryDial with go-coap's options opts.
func (ts *testServer) tryDialWith(identity, key string, opts ...udp.Option) (*udpClient.Conn, error) {
	cc, err := coapdtls.Dial(ts.Addr(), coapdtls.NewDTLSClientOptions(pskOptions(identity, key)...), opts...)
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
	dc, err := piondtls.ClientWithOptions(conn, raddr, pskOptions(identity, key)...)
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
