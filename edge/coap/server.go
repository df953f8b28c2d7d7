// Package coap is the gateway's CoAP front end: RFC 7252 over DTLS 1.2,
// where a device authenticates with its pre-shared key or its certificate,
// and, off by default, over plain UDP, where every request must prove
// possession of the key its access token is bound to (udp.go). Devices use
// the MQTT topic space under
// /ps/<topic>: PUT or POST publishes, GET reads the retained message, and GET
// with Observe (RFC 7641) subscribes. Every request and every delivery is
// authorized with the device's class permissions, as the MQTT ACL does, and
// publishes go through the device throttle.
//
// Messages enter the broker through mochi's inline client, which bypasses the
// broker's ACL hook: this package authorizes before every inline publish and
// before every delivery to an observer.
package coap

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/store"
)

// PathPrefix is where the MQTT topic space is mapped: /ps/<topic>.
const PathPrefix = "/ps/"

// Options configure a Server.
type Options struct {
	// DTLSListen is the UDP address of the coaps:// listener; "" for none.
	DTLSListen string
	// UDPListen is the address of the plain coap:// listener, which only
	// takes requests proving possession of a key-bound token; "" for none.
	UDPListen string
	// IdleTimeout closes a session without observations after this long
	// without a message; ObserveIdleTimeout one that holds observations.
	IdleTimeout, ObserveIdleTimeout time.Duration
	// MaxObservations caps the observations one device holds at once.
	MaxObservations int
	// BlockBudget bounds, in bytes, the bodies of all Block1 uploads under
	// way at once across the gateway; an upload that would go over it is
	// dropped with 5.03. 0 means 8 MiB.
	BlockBudget int64
	// BlockTimeout drops a Block1 upload that has not completed this long
	// after its first block. 0 means 2 minutes.
	BlockTimeout time.Duration

	Store *store.Store
	Auth  *authn.Authenticator
	// Broker is where publishes go and observations come from (NewInline:
	// mochi's inline client).
	Broker Broker
	// MaxPacketSize bounds a publish's payload as mqtt.max_packet_size
	// bounds an MQTT packet; 0 for none.
	MaxPacketSize int
	// Throttle decides each publish's rate, as for MQTT (nil: no limit);
	// Connects limits new sessions per source address (nil: no limit).
	Throttle *throttle.Gate
	Connects *throttle.ConnectLimiter
	// Counters are added to as the broker's are (denied, throttled, out).
	Counters Counters
	// Now is the clock of credential expiry and rate limits; nil: time.Now.
	Now func() time.Time
	Log *slog.Logger
	// PairRelay answers a pairing step for a device (as over MQTT); nil
	// turns /pair off. PairingOpen gates it: CoAP pairing is only allowed
	// while the gateway's pairing window is open (pair button, edgeid pair).
	PairRelay   func(ctx context.Context, device string, request []byte) []byte
	PairingOpen func() bool
	// ASHint is the authority a device should get tokens from (the AS
	// Request Creation Hint of a 4.01 from /authz-info); "" if none.
	ASHint string
	// Certificate is the gateway's server certificate (the one MQTT over TLS
	// presents). Set, the DTLS listener also offers certificate suites and
	// devices authenticate with their factory certificate, matched as for
	// MQTT (fingerprint, or issuer and serial under a trusted client CA);
	// nil, PSK only.
	Certificate *tls.Certificate
}

// Server is the running CoAP front end.
type Server struct {
	o      Options
	log    *slog.Logger
	ln     *coapNet.DTLSListener
	srv    *dtlsServer.Server
	served chan struct{}

	udpLn     *coapNet.UDPConn
	udpSrv    *udpServer.Server
	udpServed chan struct{}
	udp       *udpState
	// stopping is set once Close begins: no connection is made again for a
	// plain-UDP session after it (see rebind).
	stopping atomic.Bool

	subID atomic.Int64 // inline subscription ids

	// Unauthorized counts 4.01 answers (tokens and proofs refused), for metrics.
	Unauthorized atomic.Uint64

	blockBytes atomic.Int64 // what Block1 uploads under way hold (block1)

	psks pskIndex

	mu       sync.Mutex
	sessions map[string]map[*session]struct{} // device id -> live sessions
	// handed is the SHA-256 of the key last given to a handshake, by PSK
	// identity: a session must be bound to the key it was opened with.
	handed map[string][32]byte
}

// New checks the options; Start listens.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Auth == nil || o.Broker == nil || o.Log == nil {
		return nil, errors.New("coap: Store, Auth, Broker and Log are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Counters.fill()
	if o.MaxObservations <= 0 {
		o.MaxObservations = 16
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.BlockBudget <= 0 {
		o.BlockBudget = defaultBlockBudget
	}
	if o.BlockTimeout <= 0 {
		o.BlockTimeout = defaultBlockTimeout
	}
	if o.ObserveIdleTimeout < o.IdleTimeout {
		o.ObserveIdleTimeout = o.IdleTimeout
	}
	if o.DTLSListen == "" && o.UDPListen == "" {
		return nil, errors.New("coap: no listener (DTLSListen or UDPListen)")
	}
	return &Server{o: o, log: o.Log, sessions: map[string]map[*session]struct{}{}, handed: map[string][32]byte{}, udp: newUDPState()}, nil
}

// pskCipherSuites are the PSK suites offered: CCM_8 is CoAP's mandatory one
// (RFC 7252 §9.1.3.1); the others are what common stacks (libcoap, tinydtls,
// mbedTLS) also speak.
var pskCipherSuites = []piondtls.CipherSuiteID{
	piondtls.TLS_PSK_WITH_AES_128_CCM_8,
	piondtls.TLS_PSK_WITH_AES_128_CCM,
	piondtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	piondtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
}

// attempt is pion's hook for a new DTLS handshake from addr.
func (s *Server) attempt(addr net.Addr) error {
	if s.o.Connects.Allow(addr.String(), s.o.Now()) {
		return nil
	}
	s.log.Warn("coap handshake refused", "remote", addr.String(), "reason", "too many new sessions from this address")
	return errors.New("too many handshakes from this address")
}

// certCipherSuites are the certificate suites offered, by the server key's
// type: ECDHE_ECDSA with CCM_8 is CoAP's mandatory one (RFC 7252 §9.1.3.3).
func certCipherSuites(cert *tls.Certificate) []piondtls.CipherSuiteID {
	if _, ok := cert.PrivateKey.(*rsa.PrivateKey); ok {
		return []piondtls.CipherSuiteID{piondtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, piondtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}
	}
	return []piondtls.CipherSuiteID{
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		piondtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	}
}

// Start binds the listeners and serves in the background.
func (s *Server) Start() error {
	if s.o.DTLSListen != "" {
		if err := s.startDTLS(); err != nil {
			return err
		}
	}
	if s.o.UDPListen != "" {
		ln, err := coapNet.NewListenUDP("udp", s.o.UDPListen)
		if err != nil {
			_ = s.Close()
			return fmt.Errorf("coap.udp_listen %s: %w", s.o.UDPListen, err)
		}
		s.udpLn = ln
		s.udpSrv = udpServer.New(
			options.WithHandlerFunc(udpClient.HandlerFunc(s.handleUDP)),
			options.WithOnNewConn(s.onNewUDPConn),
			idleMonitor{s: s},
			options.WithBlockwise(false, maxBlockSZX, blockTimeout), // done in blockwise.go
			options.WithErrors(func(err error) { s.log.Debug("coap udp", "err", err) }),
		)
		s.udpServed = s.run("coap udp server", func() error { return s.udpSrv.Serve(ln) })
		s.log.Info("coap listening", "udp", ln.LocalAddr().String(), "auth", "proof of possession only")
	}
	return nil
}

// run serves in the background; the channel closes when serve returns
// (Close stops the server and waits on it).
func (s *Server) run(what string, serve func() error) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serve(); err != nil {
			s.log.Error(what+" stopped", "err", err)
		}
	}()
	return done
}

func (s *Server) startDTLS() error {
	suites := pskCipherSuites
	opts := []piondtls.ServerOption{
		piondtls.WithPSK(s.pskFor),
		piondtls.WithExtendedMasterSecret(piondtls.RequestExtendedMasterSecret),
	}
	// The MQTT listeners' limit on connects per source address, counted per
	// handshake attempt, before any crypto: failed handshakes (a PSK being
	// guessed) count as much as good ones.
	opts = append(opts, piondtls.WithOnConnectionAttempt(s.attempt))
	if c := s.o.Certificate; c != nil {
		suites = append(slices.Clone(suites), certCipherSuites(c)...)
		opts = append(opts, piondtls.WithCertificates(*c),
			// Certificate suites only (PSK suites never ask): a device
			// without a registered certificate fails the handshake, as one
			// with a wrong PSK does.
			piondtls.WithClientAuth(piondtls.RequireAnyClientCert),
			piondtls.WithVerifyPeerCertificate(s.verifyCert))
	}
	opts = append(opts, piondtls.WithCipherSuites(suites...))
	ln, err := coapNet.NewDTLSListener("udp", s.o.DTLSListen, coapNet.NewDTLSServerOptions(opts...))
	if err != nil {
		return fmt.Errorf("coap.dtls_listen %s: %w", s.o.DTLSListen, err)
	}
	s.ln = ln
	s.srv = dtlsServer.New(
		options.WithHandlerFunc(udpClient.HandlerFunc(s.handle)),
		options.WithOnNewConn(s.onNewConn),
		idleMonitor{s: s},
		options.WithBlockwise(false, maxBlockSZX, blockTimeout), // done in blockwise.go
		options.WithDTLSHandshakeTimeout(10*time.Second),
		// go-coap reads each DTLS record into a buffer of this size and ends
		// the session on a larger one (its default is 1472): take what pion
		// can receive, so a token of a few KB posted in one message is
		// answered rather than dropping the session.
		options.WithMTU(dtlsReadBuffer),
		options.WithErrors(func(err error) { s.log.Debug("coap", "err", err) }),
	)
	s.served = s.run("coap server", func() error { return s.srv.Serve(ln) })
	s.log.Info("coap listening", "dtls", ln.Addr().String())
	return nil
}

// dtlsReadBuffer is pion's own limit on a received datagram.
const dtlsReadBuffer = 8192

// Addr is the bound DTLS address, or "" before Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// UDPAddr is the bound plain-UDP address, or "" when there is none.
func (s *Server) UDPAddr() string {
	if s.udpLn == nil {
		return ""
	}
	return s.udpLn.LocalAddr().String()
}

// Close stops the listeners and ends every session and observation.
func (s *Server) Close() error {
	if s.stopping.Swap(true) {
		return nil
	}
	if s.srv != nil {
		s.srv.Stop()
		<-s.served
	}
	if s.udpSrv != nil {
		s.udpSrv.Stop()
		<-s.udpServed
	}
	for _, p := range s.allSessions() {
		s.end(p, "gateway shutting down", false)
	}
	return nil
}

// idleMonitor closes idle sessions: after IdleTimeout without a message, or
// ObserveIdleTimeout when the session holds observations (go-coap's default
// would close observers after 16 s).
type idleMonitor struct{ s *Server }

func (m idleMonitor) DTLSServerApply(cfg *dtlsServer.Config) { cfg.CreateInactivityMonitor = m.create }

func (m idleMonitor) UDPServerApply(cfg *udpServer.Config) { cfg.CreateInactivityMonitor = m.create }

func (m idleMonitor) create() udpClient.InactivityMonitor {
	im := &inactivity{s: m.s}
	im.Notify()
	return im
}

// unprovenIdle is how long a plain-UDP address without a session is kept.
const unprovenIdle = 10 * time.Second

type inactivity struct {
	s    *Server
	last atomic.Int64
}

func (m *inactivity) Notify() { m.last.Store(time.Now().UnixNano()) }

func (m *inactivity) CheckInactivity(now time.Time, cc *udpClient.Conn) {
	idle := now.Sub(time.Unix(0, m.last.Load()))
	limit := m.s.o.IdleTimeout
	p, ok := cc.Context().Value(sessionKey{}).(*session)
	if !ok || p.ended.Load() {
		// A plain-UDP address that never proved anything (spoofed, or a
		// refused device) is forgotten quickly, so a flood of source
		// addresses cannot hold memory for long.
		limit = unprovenIdle
	}
	if ok {
		p.mu.Lock()
		if len(p.obs) > 0 {
			limit = m.s.o.ObserveIdleTimeout
		}
		p.mu.Unlock()
	}
	if idle > limit {
		if ok {
			// Ended first: a plain-UDP session whose connection closes
			// while it is live is moved to a new one (rebind).
			m.s.end(p, "idle timeout", false)
		}
		_ = cc.Close()
	}
}
