package broker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// Listener is a TCP (optionally TLS) MQTT listener that bounds the time a new
// connection may take to finish its TLS handshake and send CONNECT. mochi's
// own listener waits forever, so idle sockets would each hold a goroutine.
type Listener struct {
	id      string
	addr    string
	tls     *tls.Config
	timeout time.Duration
	half    *HalfOpen // nil: no cap on connections that have not sent CONNECT

	mu      sync.Mutex
	ln      net.Listener
	log     *slog.Logger
	closed  atomic.Bool
	pending map[net.Conn]struct{} // every live connection of this listener
	wg      sync.WaitGroup
}

// NewListener returns a listener on addr; tlsConf nil means plain TCP.
func NewListener(id, addr string, tlsConf *tls.Config, connectTimeout time.Duration) *Listener {
	return &Listener{id: id, addr: addr, tls: tlsConf, timeout: connectTimeout}
}

// SetHalfOpen makes the listener count its connections in h until they
// have sent their whole CONNECT, and close a new one at once (before any TLS
// handshake) when h is at a cap. Share one h between all MQTT listeners and
// set Broker.ConnectRead = h.ConnectRead. Call it before Serve.
func (l *Listener) SetHalfOpen(h *HalfOpen) { l.half = h }

// ID implements listeners.Listener.
func (l *Listener) ID() string { return l.id }

// Address is the bound address once Init has run.
func (l *Listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Protocol implements listeners.Listener.
func (l *Listener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

// Init binds the address.
func (l *Listener) Init(log *slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.ln, l.log = ln, log
	l.mu.Unlock()
	return nil
}

// Serve accepts connections until Close.
func (l *Listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() {
				return
			}
			l.log.Warn("accept failed", "listener", l.id, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		// Refused before a goroutine, a TLS handshake or a read buffer is
		// spent on it; RST rather than FIN so no TIME_WAIT is left behind.
		slot, ok := l.half.admit(conn.RemoteAddr(), l.id)
		if !ok {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
			continue
		}
		go l.handle(conn, establish, slot)
	}
}

// track registers a new connection for its whole life; false once closing.
func (l *Listener) track(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return false
	}
	if l.pending == nil {
		l.pending = map[net.Conn]struct{}{}
	}
	l.pending[conn] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *Listener) untrack(conn net.Conn) {
	l.mu.Lock()
	delete(l.pending, conn)
	l.mu.Unlock()
	l.wg.Done()
}

// handle runs one connection: TLS handshake, then mochi (establish) until
// it ends. Its goroutine waits for the connection's packets under this frame
// for as long as the connection lives, so the handshake and the log line are
// in functions of their own: a shallow idle stack lets the runtime shrink
// what the handshake and the CONNECT's authentication grew (see mochi's
// Client.Read).
func (l *Listener) handle(conn net.Conn, establish listeners.EstablishFn, slot *halfSlot) {
	// The slot leaves the half-open count when the broker has read CONNECT
	// (HalfOpen.ConnectRead), or at the latest when the connection ends.
	defer l.half.release(slot)
	if !l.track(conn) {
		_ = conn.Close()
		return
	}
	defer l.untrack(conn)
	// mochi replaces this deadline with the keepalive one after CONNECT.
	_ = conn.SetDeadline(time.Now().Add(l.timeout))
	if l.tls != nil {
		var ok bool
		if conn, ok = l.handshake(conn); !ok {
			return
		}
	}
	if err := establish(l.id, conn); err != nil {
		l.ended(conn, err)
	}
}

// handshake runs the TLS handshake of a new connection, bounded by the
// connect timeout; false when it failed or the listener is closing (conn is
// then closed). The handshake runs on a goroutine of its own, waited for:
// its signature and key exchange grow a stack to tens of KiB, freed when it
// returns rather than left to the connection's long-lived goroutine.
//
//go:noinline
func (l *Listener) handshake(conn net.Conn) (net.Conn, bool) {
	tc := tls.Server(conn, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = tc.HandshakeContext(ctx)
	}()
	<-done
	cancel()
	if err != nil {
		if !l.closed.Load() {
			l.log.Warn("tls handshake failed", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
		}
		_ = conn.Close()
		return nil, false
	}
	if l.closed.Load() {
		_ = conn.Close()
		return nil, false
	}
	return tc, true
}

//go:noinline
func (l *Listener) ended(conn net.Conn, err error) {
	l.log.Debug("connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
}

// Close stops accepting and closes the listener's clients.
func (l *Listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if !l.closed.CompareAndSwap(false, true) {
		l.mu.Unlock()
		return
	}
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.mu.Unlock()
	// mochi disconnects the sessions it knows; then we close what it does not
	// know yet (handshakes, connections that have not sent CONNECT) and wait
	// for every connection to finish, so mochi's own wait for its clients
	// never races with a client still attaching.
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.pending {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
