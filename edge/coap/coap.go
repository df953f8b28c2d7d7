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
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	piondtls "github.com/pion/dtls/v3"
	dtlsServer "github.com/plgd-dev/go-coap/v3/dtls/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapNet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/broker"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/policy"
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

	Store  *store.Store
	Auth   *authn.Authenticator
	Broker *broker.Broker // its Server must have the inline client enabled
	Log    *slog.Logger
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

	mu    sync.Mutex
	peers map[string]map[*peer]struct{} // device id -> live sessions
	// handed is the SHA-256 of the key last given to a handshake, by PSK
	// identity: a session must be bound to the key it was opened with.
	handed map[string][32]byte
}

// New checks the options; Start listens.
func New(o Options) (*Server, error) {
	if o.Store == nil || o.Auth == nil || o.Broker == nil || o.Log == nil {
		return nil, errors.New("coap: Store, Auth, Broker and Log are required")
	}
	if !o.Broker.Server.Options.InlineClient {
		return nil, errors.New("coap: the MQTT server needs its inline client enabled")
	}
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
	return &Server{o: o, log: o.Log, peers: map[string]map[*peer]struct{}{}, handed: map[string][32]byte{}, udp: newUDPState()}, nil
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
	if s.o.Broker.Connects.Allow(addr.String(), s.o.Broker.Now()) {
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
	for _, p := range s.allPeers() {
		s.end(p, "gateway shutting down", false)
	}
	return nil
}

// peer is one session of a device: a DTLS session, or a plain-UDP address
// proven with a token.
type peer struct {
	// cc is the session's go-coap connection. A plain-UDP session's may be
	// replaced under it (rebind); read it with conn.
	cc     atomic.Pointer[udpClient.Conn]
	device string
	method string // "psk" or "certificate"
	// identity and keySum: the PSK identity and the SHA-256 of the key the
	// session was opened with (PSK sessions).
	identity string
	keySum   [32]byte
	// leaf and its fingerprint, issuer and serial (certificate sessions).
	leaf                             *x509.Certificate
	certSHA256, certIssuer, certSerl string

	remote string
	since  time.Time              // when the session was made
	used   atomic.Int64           // unix nanoseconds of its last request
	class  atomic.Pointer[string] // the device's class, for its rate limits
	// binding is the token and device key a plain-UDP session was proven
	// with (method "token"); nil for DTLS sessions.
	binding atomic.Pointer[binding]
	perms   atomic.Pointer[policy.Perms]
	ended   atomic.Bool
	// claims is the access token posted to /authz-info, bound to this
	// session (RFC 9200/9202); nil: the class's permissions alone.
	claims atomic.Pointer[authn.Claims]

	mu        sync.Mutex
	expiry    *time.Timer             // ends the session when its credential expires
	obs       map[string]*observation // by token
	transfers map[string]*transfer    // Block1 uploads under way
	reprs     map[string]repr         // last large representation by topic
}

type peerKey struct{}

func (p *peer) conn() *udpClient.Conn { return p.cc.Load() }

// pskFor is the DTLS PSK callback: the key of the device holding identity.
// An unknown identity gets a random key, so the handshake fails exactly as
// with a wrong key and identities cannot be probed.
func (s *Server) pskFor(identity []byte) ([]byte, error) {
	d, err := s.deviceByIdentity(string(identity))
	if err != nil {
		s.log.Warn("coap handshake refused", "psk_identity", printable(string(identity)), "reason", err.Error())
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		return k, nil
	}
	s.mu.Lock()
	s.handed[d.PSKIdentity] = sha256.Sum256(d.PSK)
	s.mu.Unlock()
	return bytes.Clone(d.PSK), nil
}

// deviceByIdentity finds the active device holding a PSK identity.
func (s *Server) deviceByIdentity(identity string) (store.Device, error) {
	for attempt := 0; attempt < 2; attempt++ {
		ids, err := s.psks.lookup(identity, s.o.Store)
		if err != nil {
			return store.Device{}, err
		}
		switch len(ids) {
		case 0:
			return store.Device{}, errors.New("unknown psk identity")
		case 1:
		default:
			return store.Device{}, fmt.Errorf("psk identity is held by %d devices (%s); refusing all of them", len(ids), strings.Join(ids, ", "))
		}
		d, err := s.o.Store.Device(ids[0])
		if err != nil || d.PSKIdentity != identity {
			// Changed since the index was built, and InvalidatePSKs is yet
			// to come: build it again, once. Only a known identity gets here.
			s.psks.invalidate()
			continue
		}
		if d.Status != store.DeviceActive {
			return store.Device{}, fmt.Errorf("device %q is %s", d.ID, d.Status)
		}
		if len(d.PSK) == 0 {
			return store.Device{}, fmt.Errorf("device %q has no psk", d.ID)
		}
		return d, nil
	}
	return store.Device{}, errors.New("unknown psk identity")
}

// pskIndex maps PSK identities to devices. It is built from the store when
// first needed and trusted until invalidated (InvalidatePSKs, on every
// device change): an identity it lacks is unknown at the cost of a map
// lookup, so a stranger trying identities never makes the gateway scan its
// devices, and no lookup waits on Server.mu.
type pskIndex struct {
	cur    atomic.Pointer[pskEntry]
	gen    atomic.Uint64 // counts invalidations; an entry of an older one is stale
	build  sync.Mutex    // one build at a time
	builds atomic.Uint64 // how many builds, for tests
}

type pskEntry struct {
	gen uint64
	m   map[string][]string // PSK identity -> device ids
}

func (x *pskIndex) lookup(identity string, st *store.Store) ([]string, error) {
	if e := x.cur.Load(); e != nil && e.gen == x.gen.Load() {
		return e.m[identity], nil
	}
	x.build.Lock()
	defer x.build.Unlock()
	gen := x.gen.Load()
	if e := x.cur.Load(); e != nil && e.gen == gen {
		return e.m[identity], nil // built while this one waited
	}
	m, err := st.PSKIdentities()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	x.builds.Add(1)
	// Devices changed during the build bump gen: the entry is stale at once
	// and the next lookup builds again.
	x.cur.Store(&pskEntry{gen: gen, m: m})
	return m[identity], nil
}

func (x *pskIndex) invalidate() { x.gen.Add(1) }

// InvalidatePSKs drops the cached PSK identity index; call it when devices change.
func (s *Server) InvalidatePSKs() { s.psks.invalidate() }

// onNewConn runs after a successful handshake: it binds the session to the
// device whose PSK or certificate it used.
func (s *Server) onNewConn(cc *udpClient.Conn) {
	dc, ok := cc.NetConn().(*piondtls.Conn)
	if !ok {
		_ = cc.Close()
		return
	}
	st, ok := dc.ConnectionState()
	if !ok {
		_ = cc.Close()
		return
	}
	p := &peer{remote: cc.RemoteAddr().String(), obs: map[string]*observation{}, since: time.Now()}
	p.cc.Store(cc)
	p.used.Store(time.Now().UnixNano())
	var d store.Device
	var err error
	if len(st.PeerCertificates) > 0 {
		var chain []*x509.Certificate
		var pr *authn.Principal
		if chain, err = parseChain(st.PeerCertificates); err == nil {
			pr, err = s.o.Auth.Certificate(chain, "")
		}
		if err != nil {
			s.log.Warn("coap session refused", "remote", p.remote, "method", "certificate", "reason", err.Error())
			_ = cc.Close()
			return
		}
		d, p.method, p.leaf = pr.Device, "certificate", chain[0]
		p.certSHA256, p.certIssuer, p.certSerl = pr.CertSHA256, pr.CertIssuer, pr.CertSerial
	} else {
		identity := string(st.IdentityHint)
		if d, err = s.deviceByIdentity(identity); err != nil {
			s.log.Warn("coap session refused", "psk_identity", printable(identity), "remote", p.remote, "reason", err.Error())
			_ = cc.Close()
			return
		}
		p.method, p.identity, p.keySum = "psk", identity, sha256.Sum256(d.PSK)
		s.mu.Lock()
		used := s.handed[identity]
		s.mu.Unlock()
		// The key may have changed between the handshake and now: the
		// session must be the store's current key's, not an old one's.
		if subtle.ConstantTimeCompare(used[:], p.keySum[:]) != 1 {
			s.log.Warn("coap session refused", "psk_identity", printable(identity), "remote", p.remote, "reason", "psk changed during the handshake")
			_ = cc.Close()
			return
		}
	}
	p.device = d.ID
	p.class.Store(&d.Class)
	perms, err := s.o.Auth.Permissions(d, nil, d.ID)
	if err != nil {
		s.log.Warn("coap session refused", "device", d.ID, "reason", err.Error())
		_ = cc.Close()
		return
	}
	p.perms.Store(&perms)
	s.mu.Lock()
	s.roomFor(d.ID)
	cc.SetContextValue(peerKey{}, p)
	if s.peers[d.ID] == nil {
		s.peers[d.ID] = map[*peer]struct{}{}
	}
	s.peers[d.ID][p] = struct{}{}
	s.mu.Unlock()
	cc.AddOnClose(func() { s.end(p, "session closed", false) })
	s.armExpiry(p)
	s.log.Info("coap connected", "device", d.ID, "remote", p.remote, "method", p.method)
	// The device may have changed between the handshake and now.
	s.check(p)
}

// check re-evaluates a session against the store: it ends it, or installs
// the device's current permissions and cancels observations no longer allowed.
func (s *Server) check(p *peer) {
	if p.ended.Load() {
		return
	}
	d, perms, err := s.o.Auth.Revalidate(p.device, p.claims.Load(), p.device)
	if err != nil {
		s.end(p, err.Error(), true) // fail closed, store errors included
		return
	}
	if why := p.credentialGone(d); why != "" {
		s.end(p, why, true)
		return
	}
	p.class.Store(&d.Class)
	p.perms.Store(&perms)
	p.mu.Lock()
	var drop []*observation
	for _, o := range p.obs {
		if !perms.CanSubscribe(o.topic) {
			drop = append(drop, o)
		}
	}
	p.mu.Unlock()
	for _, o := range drop {
		s.log.Info("coap observation cancelled", "device", p.device, "topic", o.topic, "reason", "no longer allowed")
		s.cancel(o, codes.Forbidden)
	}
}

// armExpiry ends p when its credential expires, as an MQTT session is cut
// at its End, even if it holds observations and sends nothing: the token's
// exp (plus the clock skew allowed) or the client certificate's NotAfter,
// whichever comes first.
func (s *Server) armExpiry(p *peer) {
	// At exp (plus auth.exp_leeway, no clock skew) or the certificate's
	// NotAfter, whichever comes first, as for MQTT.
	at := s.o.Auth.CredentialEnd(p.claims.Load(), p.leaf)
	if at.IsZero() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended.Load() {
		return // end stopped the timer, or is about to: arm none
	}
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.expiry = time.AfterFunc(at.Sub(s.o.Broker.Now()), func() { s.end(p, "credential expired", true) })
}

// credentialGone says why the credential the session was opened with is no
// longer the device's, or "".
func (p *peer) credentialGone(d store.Device) string {
	switch p.method {
	case "token":
		// Plain UDP: Revalidate checked the token; the key its proofs are
		// checked with must still be the device's.
		if b := p.binding.Load(); b == nil || !bytes.Equal(b.keyRaw, d.PublicKey) {
			return "device key changed"
		}
		return ""
	case "certificate":
		byFP := d.CertSHA256 == p.certSHA256
		byIssuer := d.CertIssuer != "" && d.CertIssuer == p.certIssuer && d.CertSerial == p.certSerl
		if !byFP && !byIssuer {
			return "certificate no longer registered to the device"
		}
		return ""
	}
	if d.PSKIdentity != p.identity {
		return "psk identity changed"
	}
	sum := sha256.Sum256(d.PSK)
	if subtle.ConstantTimeCompare(sum[:], p.keySum[:]) != 1 {
		return "psk changed"
	}
	return ""
}

// verifyCert refuses, during the handshake, a client certificate that is
// not a registered device's; onNewConn binds the session to that device.
func (s *Server) verifyCert(raw [][]byte, _ [][]*x509.Certificate) error {
	chain, err := parseChain(raw)
	if err == nil {
		_, err = s.o.Auth.Certificate(chain, "")
	}
	if err != nil {
		s.log.Warn("coap handshake refused", "method", "certificate", "reason", err.Error())
		return errors.New("client certificate refused")
	}
	return nil
}

func parseChain(raw [][]byte) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no client certificate")
	}
	return chain, nil
}

// Recheck re-evaluates every CoAP session of device id against the store.
// It does not block on the network: call it from the store watcher.
func (s *Server) Recheck(id string) {
	for _, p := range s.peersOf(id) {
		s.check(p)
	}
}

// allPeers is every live session, copied out so that callers may end or
// re-check them without s.mu held.
func (s *Server) allPeers() []*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*peer
	for _, ps := range s.peers {
		for p := range ps {
			all = append(all, p)
		}
	}
	return all
}

// RecheckAll re-evaluates every CoAP session (after class changes).
func (s *Server) RecheckAll() {
	for _, p := range s.allPeers() {
		s.check(p)
	}
}

// EndDevice ends every CoAP session of device id, whatever its credential
// (PSK, certificate, token over DTLS or plain UDP), cancelling its
// observations with 4.03, and returns how many it ended. It does not block
// on the network: the store watcher calls it for a device revocation.
func (s *Server) EndDevice(id, reason string) int {
	n := 0
	for _, p := range s.peersOf(id) {
		if s.end(p, reason, true) {
			n++
		}
	}
	return n
}

// SessionInfo describes a live CoAP session, for the technician's view.
type SessionInfo struct {
	Device string
	// Transport is "coaps" (DTLS) or "coap" (plain UDP).
	Transport string
	// Method is how the session was authenticated: "psk", "certificate" or
	// "token" (plain UDP, proven per request).
	Method       string
	Subject      string // the bound token's sub, if any
	JTI          string
	Remote       string
	ConnectedAt  time.Time
	Expires      time.Time // zero: no credential expiry
	Observations int
}

// List describes every live CoAP session.
func (s *Server) List() []SessionInfo {
	all := s.allPeers()
	out := make([]SessionInfo, 0, len(all))
	for _, p := range all {
		si := SessionInfo{Device: p.device, Transport: "coaps", Method: p.method, Remote: p.remote, ConnectedAt: p.since}
		if p.method == "token" {
			si.Transport = "coap"
		}
		if c := p.claims.Load(); c != nil {
			si.Subject, si.JTI, si.Expires = c.Subject, c.JTI, c.Expiry
		}
		if p.leaf != nil && (si.Expires.IsZero() || p.leaf.NotAfter.Before(si.Expires)) {
			si.Expires = p.leaf.NotAfter
		}
		p.mu.Lock()
		si.Observations = len(p.obs)
		p.mu.Unlock()
		out = append(out, si)
	}
	return out
}

// EndMatching ends every CoAP session whose device and bound token match
// (a technician's kick by subject or token id), cancelling its observations
// with 4.03, and returns how many it ended.
func (s *Server) EndMatching(match func(device string, c *authn.Claims) bool, reason string) int {
	n := 0
	for _, p := range s.allPeers() {
		if match(p.device, p.claims.Load()) && s.end(p, reason, true) {
			n++
		}
	}
	return n
}

// Counts are the live sessions by transport ("coaps", "coap") and the
// observations they hold, for metrics.
func (s *Server) Counts() (sessions map[string]int, observations int) {
	sessions = map[string]int{"coaps": 0, "coap": 0}
	for _, si := range s.List() {
		sessions[si.Transport]++
		observations += si.Observations
	}
	return sessions, observations
}

// Sessions is the number of live CoAP sessions of device id ("" for all).
func (s *Server) Sessions(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != "" {
		return len(s.peers[id])
	}
	n := 0
	for _, ps := range s.peers {
		n += len(ps)
	}
	return n
}

// Observations is the number of live observations of device id.
func (s *Server) Observations(id string) int {
	n := 0
	for _, p := range s.peersOf(id) {
		p.mu.Lock()
		n += len(p.obs)
		p.mu.Unlock()
	}
	return n
}

func (s *Server) peersOf(id string) []*peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*peer, 0, len(s.peers[id]))
	for p := range s.peers[id] {
		out = append(out, p)
	}
	return out
}

// end ends a session: its observations are unsubscribed at once (no message
// is delivered after end returns) and, when notify, told 4.03 before the
// DTLS session is closed, from a goroutine so the caller never waits on the
// network.
func (s *Server) end(p *peer, reason string, notify bool) bool {
	code := codes.Empty
	if notify {
		code = codes.Forbidden
	}
	return s.endWith(p, reason, code)
}

// endWith is end, telling the observers code (none when codes.Empty).
func (s *Server) endWith(p *peer, reason string, code codes.Code) bool {
	if !p.ended.CompareAndSwap(false, true) {
		return false
	}
	p.mu.Lock()
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.mu.Unlock()
	s.mu.Lock()
	if ps := s.peers[p.device]; ps != nil {
		delete(ps, p)
		if len(ps) == 0 {
			delete(s.peers, p.device)
		}
	}
	s.mu.Unlock()
	p.mu.Lock()
	obs := make([]*observation, 0, len(p.obs))
	for _, o := range p.obs {
		obs = append(obs, o)
	}
	p.mu.Unlock()
	for _, o := range obs {
		s.unsubscribe(o)
	}
	s.dropTransfers(p)
	if code != codes.Empty {
		s.log.Warn("coap session ended", "device", p.device, "remote", p.remote, "reason", reason)
		// A refusal's reason may carry store details: the device is told
		// only that it is not authorized.
		diag := "observation cancelled: not authorized"
		if code != codes.Forbidden {
			diag = "observation cancelled: " + reason
		}
		go func() {
			for _, o := range obs {
				o.final(code, diag)
			}
			_ = p.conn().Close()
		}()
	} else {
		s.log.Info("coap disconnected", "device", p.device, "remote", p.remote, "reason", reason)
	}
	return true
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

// maxSessionsPerDevice caps one device's live CoAP sessions (DTLS sessions
// and plain-UDP addresses together), and with them what it can hold.
const maxSessionsPerDevice = 8

// roomFor makes room for one more session of device, with s.mu held: at the
// cap, the session used longest ago is ended, preferring one that holds no
// observation. A device that reboots wakes on a new session (a new handshake,
// a new source port) and cannot say the old one is dead: the newer session
// must win, or a device that rebooted 8 times while observing would be
// locked out until observe_idle_timeout.
func (s *Server) roomFor(device string) {
	if len(s.peers[device]) < maxSessionsPerDevice {
		return
	}
	var idle, any *peer
	for q := range s.peers[device] {
		q.mu.Lock()
		observing := len(q.obs) > 0
		q.mu.Unlock()
		if !observing && (idle == nil || q.used.Load() < idle.used.Load()) {
			idle = q
		}
		if any == nil || q.used.Load() < any.used.Load() {
			any = q
		}
	}
	victim := idle
	if victim == nil {
		victim = any
	}
	// end takes s.mu itself: drop the peer here and finish it outside.
	delete(s.peers[device], victim)
	go s.endWith(victim, "replaced by a newer session of the device", codes.ServiceUnavailable)
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
	p, ok := cc.Context().Value(peerKey{}).(*peer)
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

// handle serves one request over DTLS: the session's device is the one
// whose PSK or certificate the handshake used.
func (s *Server) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if why := badOption(r); why != "" {
		if r.Type() == message.Confirmable {
			reply(w, codes.BadOption, why)
		}
		return // a non-confirmable one is rejected: ignored (RFC 7252 §4.3)
	}
	p, _ := w.Conn().Context().Value(peerKey{}).(*peer)
	if p == nil || p.ended.Load() {
		reply(w, codes.Unauthorized, "no authenticated session")
		return
	}
	s.serve(w, r, p)
}

// serve answers an authenticated request of p.
func (s *Server) serve(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *peer) {
	p.used.Store(time.Now().UnixNano())
	// An expired credential ends the session whatever the request (the
	// timer of armExpiry may not have fired yet).
	if p.leaf != nil && s.o.Broker.Now().After(p.leaf.NotAfter) {
		s.end(p, "client certificate expired", true)
		reply(w, codes.Unauthorized, "the client certificate has expired")
		return
	}
	if c := p.claims.Load(); c != nil && s.o.Auth.Verifier.CheckTime(c) != nil {
		s.end(p, "token expired", false)
		reply(w, codes.Unauthorized, "the access token of this session has expired; open a new session with a new token")
		return
	}
	path, err := r.Options().Path()
	if err == nil && path == PathPair {
		if p.method == "token" {
			// The relay waits on the authority; on the shared plain-UDP
			// socket that would hold up every device behind it.
			reply(w, codes.NotFound, "pair over coaps://")
			return
		}
		s.pair(w, r, p)
		return
	}
	if err == nil && path == PathAuthzInfo {
		s.authzInfo(w, r, p)
		return
	}
	if err != nil || !strings.HasPrefix(path, PathPrefix) {
		reply(w, codes.NotFound, "resources are under "+PathPrefix+"<topic>")
		return
	}
	topic := path[len(PathPrefix):]
	if why := badTopic(topic); why != "" {
		reply(w, codes.BadRequest, why)
		return
	}
	switch r.Code() {
	case codes.PUT, codes.POST:
		s.publish(w, r, p, topic)
	case codes.GET:
		s.get(w, r, p, topic)
	default:
		reply(w, codes.MethodNotAllowed, "use PUT or POST to publish, GET (with Observe to subscribe)")
	}
}

// badTopic refuses what is not an MQTT topic name a device may use.
func badTopic(t string) string {
	switch {
	case t == "":
		return "empty topic"
	case len(t) > 65535:
		return "topic longer than 65535 bytes"
	case !utf8.ValidString(t):
		return "topic is not UTF-8"
	case strings.ContainsAny(t, "+#\x00"):
		return "topic must not contain + # or NUL (wildcards are not supported over CoAP)"
	case strings.HasPrefix(t, "$"):
		return "topics starting with $ are reserved"
	}
	return ""
}

func (s *Server) publish(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *peer, topic string) {
	b := s.o.Broker
	if !p.perms.Load().CanPublish(topic) {
		b.Counters.Denied.Add(1)
		s.log.Info("coap publish denied", "device", p.device, "topic", topic)
		reply(w, codes.Forbidden, "not allowed to publish to this topic")
		return
	}
	// The same bound as an MQTT packet: block-wise transfer must not let a
	// CoAP device publish what an MQTT one could not.
	limit := int(b.Server.Options.Capabilities.MaximumPacketSize)
	payload, echo, done := s.block1(w, r, p, limit)
	if !done {
		return
	}
	if max := limit; max > 0 && len(payload) > max {
		s.log.Warn("coap publish refused", "device", p.device, "topic", topic, "reason", "payload too large", "bytes", len(payload))
		tooLarge(w, max)
		return
	}
	subject := ""
	if c := p.claims.Load(); c != nil {
		subject = c.Subject
	}
	// Device, subject and class limits, as for MQTT.
	if v := b.Throttle(p.device, *p.class.Load(), subject, len(payload)); v != throttle.Allow {
		b.Counters.Throttled.Add(1)
		_ = w.SetResponse(codes.TooManyRequests, message.TextPlain, bytes.NewReader([]byte("message rate too high")),
			message.Option{ID: message.MaxAge, Value: []byte{1}})
		if v == throttle.Disconnect {
			s.end(p, "message rate too high", true)
		}
		return
	}
	// A device whose MQTT client id is mochi's "inline" could take the inline
	// client's place in the registry: publish only through the real one.
	inline, ok := b.Server.Clients.Get(mqtt.InlineClientId)
	if !ok || !inline.Net.Inline {
		reply(w, codes.ServiceUnavailable, "broker not ready")
		return
	}
	retain := false
	if qs, err := r.Options().Queries(); err == nil {
		for _, q := range qs {
			if q == "retain" || q == "retain=1" || q == "retain=true" {
				retain = true
			}
		}
	}
	var qos byte
	if r.Type() == message.Confirmable {
		qos = 1
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    uint16(qos), // as mochi's Server.Publish: a valid id for QoS 1
	}
	if cf, err := r.ContentFormat(); err == nil {
		pk.Properties.ContentType = mimeOf(cf)
	}
	// Authorized above: the inline client itself is allowed everything.
	if err := b.Server.InjectPacket(inline, pk); err != nil {
		s.log.Warn("coap publish failed", "device", p.device, "topic", topic, "err", err)
		reply(w, codes.InternalServerError, "publish failed")
		return
	}
	var opts []message.Option
	if echo != 0 {
		opts = append(opts, message.Option{ID: message.Block1, Value: encodeUint(echo)})
	}
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil, opts...)
}

func (s *Server) get(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *peer, topic string) {
	b := s.o.Broker
	obs, obsErr := r.Options().Observe()
	if obsErr == nil && obs == 1 {
		s.deregister(p, r.Token())
	}
	if !p.perms.Load().CanSubscribe(topic) {
		b.Counters.Denied.Add(1)
		s.log.Info("coap subscribe denied", "device", p.device, "topic", topic)
		reply(w, codes.Forbidden, "not allowed to subscribe to this topic")
		return
	}
	var retained *packets.Packet
	if ms := b.Server.Topics.Messages(topic); len(ms) > 0 {
		retained = &ms[0]
	}
	szx, num := requestedBlock2(r)
	if num > 0 {
		// A Block2 follow-up: the rest of the large representation this
		// session was last sent for the topic, else of the retained message.
		rp, ok := p.lastRepr(topic)
		if !ok && retained != nil {
			rp, ok = repr{body: retained.Payload, cf: formatOf(*retained)}, true
		}
		if !ok {
			reply(w, codes.NotFound, "no representation to continue")
			return
		}
		part, opts, ok := blockOf(rp.body, szx, num)
		if !ok {
			reply(w, codes.BadOption, "block number past the end of the representation")
			return
		}
		_ = w.SetResponse(codes.Content, rp.cf, bytes.NewReader(part), opts...)
		return
	}
	if obsErr != nil || obs != 0 {
		if retained == nil {
			reply(w, codes.NotFound, "no retained message on this topic")
			return
		}
		s.answer(w, p, topic, codes.Content, formatOf(*retained), retained.Payload, szx)
		return
	}
	o, code := s.register(p, r.Token(), topic, retained)
	if o == nil {
		reply(w, code, "cannot observe: too many observations")
		return
	}
	var body []byte
	cf := message.TextPlain
	if retained != nil {
		body, cf = retained.Payload, formatOf(*retained)
	}
	s.answer(w, p, topic, codes.Content, cf, body, szx, message.Option{ID: message.Observe, Value: encodeUint(2)})
}

// answer sets a response with body, or with its first block when it is
// larger than a block (the client asks for the rest, RFC 7959 §2.4).
func (s *Server) answer(w *responsewriter.ResponseWriter[*udpClient.Conn], p *peer, topic string, code codes.Code, cf message.MediaType,
	body []byte, szx blockwise.SZX, extra ...message.Option) {
	part, opts, _ := blockOf(body, szx, 0)
	p.rememberRepr(topic, body, cf)
	_ = w.SetResponse(code, cf, bytes.NewReader(part), append(extra, opts...)...)
}

// reply sets a response with a short diagnostic payload (RFC 7252 §5.5.2).
func reply(w *responsewriter.ResponseWriter[*udpClient.Conn], code codes.Code, diag string) {
	_ = w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(diag)))
}

func encodeUint(v uint32) []byte {
	buf := make([]byte, 4)
	n, _ := message.EncodeUint32(buf, v)
	return buf[:n]
}

// printable shortens an untrusted identity for a log line.
func printable(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// PathPair is the pairing relay resource for devices without HTTPS.
const PathPair = "/pair"

// pair relays a device's pairing step ({"op":"start"} or {"op":"poll",
// "device_code":...}, POST) to the authority through the gateway, only while
// the gateway's pairing window is open; the answer is the authority's JSON.
func (s *Server) pair(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *peer) {
	if r.Code() != codes.POST {
		reply(w, codes.MethodNotAllowed, `POST {"op":"start"} or {"op":"poll","device_code":"..."}`)
		return
	}
	if s.o.PairRelay == nil {
		reply(w, codes.NotFound, "pairing through this gateway is not available")
		return
	}
	if s.o.PairingOpen == nil || !s.o.PairingOpen() {
		reply(w, codes.Forbidden, "the pairing window is closed: press the gateway's pair button (or run edgeid pair) and try again")
		return
	}
	body, err := r.ReadBody()
	if err != nil || len(body) > 4096 {
		reply(w, codes.BadRequest, "send a small JSON body")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	answer := s.o.PairRelay(ctx, p.device, body)
	_ = w.SetResponse(codes.Changed, message.AppJSON, bytes.NewReader(answer))
}

// PathAuthzInfo is RFC 9200's resource for posting an access token.
const PathAuthzInfo = "/authz-info"

// authzInfo takes an access token (a JWT, as text) for this DTLS session:
// validated as for MQTT (issuer keys, claims, revocation, the device and its
// owner), it must be the session's own device's (client_id). The session's
// permissions become the class's intersected with the token's scope, and the
// token's expiry and revocation end the session. A token bound to a public
// key (cnf jkt) is refused here: the DTLS session cannot prove that key; one
// bound to a certificate (cnf x5t#S256) or a PSK (cnf kid) must be the
// session's.
func (s *Server) authzInfo(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *peer) {
	if r.Code() != codes.POST {
		reply(w, codes.MethodNotAllowed, "POST the access token")
		return
	}
	// A token too large for one datagram may come block-wise (RFC 7959).
	body, echo, done := s.block1(w, r, p, maxTokenPost)
	if !done {
		return
	}
	if len(body) > maxTokenPost {
		tooLarge(w, maxTokenPost)
		return
	}
	var opts []message.Option
	if echo != 0 {
		opts = append(opts, message.Option{ID: message.Block1, Value: encodeUint(echo)})
	}
	tok, why := tokenOf(body)
	if why != "" {
		s.unauthorized(w, why)
		return
	}
	c, err := s.o.Auth.Verifier.Verify(tok)
	// A token bound to the session's certificate (cnf x5t#S256) or PSK
	// (cnf kid = the PSK identity, RFC 9202) is proven by the handshake, as
	// Token checks; one bound to a public key (jkt) cannot be proven here.
	if err == nil && c.Cnf.JKT != "" {
		err = &authn.Error{Reason: authn.ReasonPoPRequired, Detail: "a token bound to a public key (cnf jkt) cannot be proven over DTLS: use plain UDP with proofs, or MQTT 5"}
	}
	if err == nil && c.ClientID != p.device {
		err = &authn.Error{Reason: authn.ReasonClientID, Detail: "the token is for another device"}
	}
	if err == nil {
		_, err = s.o.Auth.Token(tok, authn.Possession{Cert: p.leaf, PSKIdentity: p.identity}, p.device)
	}
	if err != nil {
		s.log.Warn("coap token refused", "device", p.device, "remote", p.remote, "reason", authn.ReasonOf(err), "detail", err.Error())
		s.unauthorized(w, "token refused: "+string(authn.ReasonOf(err)))
		return
	}
	p.claims.Store(c)
	s.armExpiry(p)
	s.check(p)
	if p.ended.Load() {
		s.unauthorized(w, "token refused")
		return
	}
	s.log.Info("coap token bound to session", "device", p.device, "expires", c.Expiry)
	_ = w.SetResponse(codes.Created, message.TextPlain, bytes.NewReader(nil), opts...)
}

// maxTokenPost bounds the body of a POST to /authz-info.
const maxTokenPost = 8192

// tokenOf is the access token a POST to /authz-info carries: the body
// itself (a JWT, or a CWT as CBOR), or the token inside a CBOR byte string
// (RFC 9200 posts tokens as application/ace+cbor byte strings); else "" and
// why not.
func tokenOf(body []byte) (tok, why string) {
	ok := len(body) > 0
	if ok && body[0]>>5 == 2 { // CBOR major type 2: a byte string
		var inner []byte
		ok = cbor.Unmarshal(body, &inner) == nil && len(inner) > 0
		body = inner
	}
	if !ok {
		return "", "post the access token (a JWT, or a CWT, bare or as a CBOR byte string) as the body"
	}
	return string(body), ""
}

// tooLarge answers 4.13 with the limit in Size1 (RFC 7959 §4).
func tooLarge(w *responsewriter.ResponseWriter[*udpClient.Conn], limit int) {
	_ = w.SetResponse(codes.RequestEntityTooLarge, message.TextPlain, bytes.NewReader([]byte("payload larger than the gateway accepts")),
		message.Option{ID: message.Size1, Value: encodeUint(uint32(limit))})
}

// unauthorized answers 4.01 with AS Request Creation Hints (as JSON).
func (s *Server) unauthorized(w *responsewriter.ResponseWriter[*udpClient.Conn], why string) {
	s.Unauthorized.Add(1)
	hint, _ := json.Marshal(map[string]string{"AS": s.o.ASHint, "error": why})
	_ = w.SetResponse(codes.Unauthorized, message.AppJSON, bytes.NewReader(hint))
}
