package broker

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
)

// connectReadHook does what Broker's auth hook does with Broker.ConnectRead.
type connectReadHook struct {
	mqtt.HookBase
	h *HalfOpen
}

func (c *connectReadHook) ID() string           { return "connect-read" }
func (c *connectReadHook) Provides(b byte) bool { return b == mqtt.OnConnect }
func (c *connectReadHook) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	c.h.ConnectRead(cl.Net.Remote)
	return nil
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type halfFixture struct {
	h    *HalfOpen
	logs *lockedBuf
	tcp  string // address of the plain listener
	tls  string // address of the TLS listener
}

// startHalfOpen runs a mochi server (everyone allowed) with a TCP and a TLS
// Listener sharing one HalfOpen.
func startHalfOpen(t *testing.T, max, perSource int, timeout time.Duration) *halfFixture {
	t.Helper()
	logs := &lockedBuf{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(w, nil))
	h := NewHalfOpen(max, perSource, log)
	srv := mqtt.New(&mqtt.Options{Logger: discardLog()})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(&connectReadHook{h: h}, nil); err != nil {
		t.Fatal(err)
	}
	plain := NewListener("t-tcp", "127.0.0.1:0", nil, timeout)
	plain.SetHalfOpen(h)
	secure := NewListener("t-tls", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, timeout)
	secure.SetHalfOpen(h)
	for _, l := range []*Listener{plain, secure} {
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &halfFixture{h: h, logs: logs, tcp: plain.Address(), tls: secure.Address()}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dialFrom connects to addr from the loopback address src (127.0.0.x: each
// is a distinct source to the gateway).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refused dials addr from src and reports whether the server closes the
// connection at once (the RST can already fail the dial).
func refused(t *testing.T, src, addr string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNRESET) {
			return true
		}
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	defer c.Close()
	return closedWithin(c, 5*time.Second)
}

// partialConnect declares a 100-byte CONNECT and sends 5 bytes of it.
var partialConnect = []byte{0x10, 100, 0, 4, 'M', 'Q', 'T'}

func connectPacket(t *testing.T, id string) []byte {
	t.Helper()
	var b bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: id}}
	if err := pk.ConnectEncode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// closedWithin reports whether the server closes c within d (c sends nothing
// to us before CONNECT, so any read result but a timeout means closed).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func (f *halfFixture) waitLen(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for f.h.Len() != want {
		if time.Now().After(deadline) {
			t.Fatalf("half-open count %d, want %d", f.h.Len(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *halfFixture) hold(t *testing.T, src, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c := dialFrom(t, src, addr)
		if _, err := c.Write(partialConnect); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

func assertOpen(t *testing.T, what string, cs ...net.Conn) {
	t.Helper()
	for i, c := range cs {
		if closedWithin(c, 100*time.Millisecond) {
			t.Fatalf("%s %d was closed; it is within the caps", what, i)
		}
	}
}

func TestHalfOpenPerSourceCap(t *testing.T) {
	const per = 4
	f := startHalfOpen(t, 100, per, time.Minute)
	held := f.hold(t, "127.0.0.2", f.tcp, per)
	f.waitLen(t, per)

	if !refused(t, "127.0.0.2", f.tcp) {
		t.Fatalf("connection %d from one source was not closed (cap %d)", per+1, per)
	}
	if got := f.h.Refused.Load(); got != 1 {
		t.Fatalf("Refused = %d, want 1", got)
	}
	assertOpen(t, "held connection", held...)

	// Another source is admitted up to its own cap.
	other := f.hold(t, "127.0.0.3", f.tcp, per)
	f.waitLen(t, 2*per)
	assertOpen(t, "other source's connection", other...)

	// A connection that finishes its CONNECT leaves the count (and stays up);
	// its source may open one more.
	done := dialFrom(t, "127.0.0.4", f.tcp)
	f.waitLen(t, 2*per+1)
	f.hold(t, "127.0.0.4", f.tcp, per-1)
	f.waitLen(t, 3*per)
	if _, err := done.Write(connectPacket(t, "c1")); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = done.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(done, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", ack, err)
	}
	f.waitLen(t, 3*per-1)
	more := f.hold(t, "127.0.0.4", f.tcp, 1)
	f.waitLen(t, 3*per)
	assertOpen(t, "connection after a CONNECT freed its slot", more...)
	assertOpen(t, "connected client", done)
	// The cap holds again for that source.
	if !refused(t, "127.0.0.4", f.tcp) {
		t.Fatal("source over its cap again was admitted")
	}

	// A connection that ends without CONNECT gives its slot back.
	_ = held[0].Close()
	f.waitLen(t, 3*per-1)
	f.hold(t, "127.0.0.2", f.tcp, 1)
	f.waitLen(t, 3*per)
	if got := f.h.Refused.Load(); got != 2 {
		t.Fatalf("Refused = %d, want 2", got)
	}
}

func TestHalfOpenTotalCap(t *testing.T) {
	f := startHalfOpen(t, 5, 3, time.Minute)
	a := f.hold(t, "127.0.0.2", f.tcp, 3)
	b := f.hold(t, "127.0.0.3", f.tcp, 2)
	f.waitLen(t, 5)
	if !refused(t, "127.0.0.4", f.tcp) {
		t.Fatal("a connection past the gateway-wide cap was admitted")
	}
	assertOpen(t, "held", append(a, b...)...)
	_ = b[0].Close()
	f.waitLen(t, 4)
	c := f.hold(t, "127.0.0.4", f.tcp, 1)
	f.waitLen(t, 5)
	assertOpen(t, "admitted after a slot freed", c...)
	if !strings.Contains(f.logs.String(), "reason=total") {
		t.Fatalf("refusal not logged with reason total:\n%s", f.logs)
	}
}

// The TCP and TLS listeners share the count, a TLS handshake in progress is
// half-open, and a refused connection gets no handshake.
func TestHalfOpenSharedByListenersAndTLS(t *testing.T) {
	f := startHalfOpen(t, 100, 2, time.Minute)
	f.hold(t, "127.0.0.2", f.tcp, 1)
	dialFrom(t, "127.0.0.2", f.tls) // never sends a ClientHello
	f.waitLen(t, 2)
	d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second},
		Config: &tls.Config{InsecureSkipVerify: true}}
	if c, err := d.Dial("tcp", f.tls); err == nil {
		c.Close()
		t.Fatal("TLS handshake completed on a connection over the cap")
	}
	if got := f.h.Refused.Load(); got != 1 {
		t.Fatalf("Refused = %d, want 1", got)
	}
	// Another source completes TLS and CONNECT.
	tc := tls.Client(dialFrom(t, "127.0.0.3", f.tls), &tls.Config{InsecureSkipVerify: true})
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Write(connectPacket(t, "c-tls")); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(tc, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK over TLS % x, %v", ack, err)
	}
	f.waitLen(t, 2)
}

// The connect timeout ends a half-open connection and frees its slot.
func TestHalfOpenTimeoutFreesSlot(t *testing.T) {
	f := startHalfOpen(t, 100, 1, 300*time.Millisecond)
	c := f.hold(t, "127.0.0.2", f.tcp, 1)[0]
	f.waitLen(t, 1)
	if !closedWithin(c, 10*time.Second) {
		t.Fatal("half-open connection outlived the connect timeout")
	}
	f.waitLen(t, 0)
	f.hold(t, "127.0.0.2", f.tcp, 1)
	f.waitLen(t, 1)
}

// A flood of refusals from one source is one log line per few seconds.
func TestHalfOpenRefusalsLoggedOncePerSource(t *testing.T) {
	f := startHalfOpen(t, 100, 1, time.Minute)
	f.hold(t, "127.0.0.2", f.tcp, 1)
	f.hold(t, "127.0.0.3", f.tcp, 1)
	f.waitLen(t, 2)
	for i := range 30 {
		if !refused(t, "127.0.0.2", f.tcp) {
			t.Fatalf("connection %d over the cap admitted", i)
		}
	}
	if !refused(t, "127.0.0.3", f.tcp) {
		t.Fatal("connection over the cap admitted")
	}
	if got := f.h.Refused.Load(); got != 31 {
		t.Fatalf("Refused = %d, want 31", got)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "source=127.0.0.2 "); n != 1 {
		t.Fatalf("%d log lines for 30 refusals from one source, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "source=127.0.0.3 "); n != 1 {
		t.Fatalf("%d log lines for the second source, want 1:\n%s", n, logs)
	}
}

func TestHalfOpenSourceKey(t *testing.T) {
	cases := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 2}, "2001:db8:1:2::/64"},
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.8"), Port: 1}, "192.0.2.8"},
	}
	for _, c := range cases {
		if got := sourceOf(c.addr); got != c.want {
			t.Errorf("sourceOf(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
}

// Two connections with one remote address (possible across listeners): each
// leaves the count once, whichever of CONNECT and the end comes first.
func TestHalfOpenSameRemoteTwice(t *testing.T) {
	h := NewHalfOpen(10, 10, nil)
	addr := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 4000}
	a, ok1 := h.admit(addr, "x")
	b, ok2 := h.admit(addr, "y")
	if !ok1 || !ok2 || h.Len() != 2 {
		t.Fatal("admit")
	}
	h.ConnectRead(addr.String()) // b's CONNECT, say; a's slot is taken
	if h.Len() != 1 {
		t.Fatalf("Len %d after one CONNECT", h.Len())
	}
	h.release(a)
	h.release(b)
	h.release(b)
	h.ConnectRead(addr.String())
	if h.Len() != 0 || len(h.bySource) != 0 || len(h.byRemote) != 0 {
		t.Fatalf("Len %d, sources %v, remotes %v", h.Len(), h.bySource, h.byRemote)
	}
	var nilH *HalfOpen
	if _, ok := nilH.admit(addr, "x"); !ok {
		t.Fatal("nil HalfOpen refused")
	}
	nilH.ConnectRead("x")
	nilH.release(nil)
}
