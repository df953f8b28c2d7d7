package coap

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"sync"
	"sync/atomic"
	"time"

	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// session is one live CoAP session of a device (as an MQTT client's is in
// the broker): a DTLS session, or a plain-UDP address proven with a token.
type session struct {
	// recheck serializes re-evaluations of the session against the store
	// and the share clock, reads and install together: two that overlapped
	// (a store change's and the share clock's, say) could install the
	// older one's permission last, and a share's topic outside its window
	// was delivered again.
	recheck sync.Mutex
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

type sessionKey struct{}

func (p *session) conn() *udpClient.Conn { return p.cc.Load() }

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
	p := &session{remote: cc.RemoteAddr().String(), obs: map[string]*observation{}, since: time.Now()}
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
	cc.SetContextValue(sessionKey{}, p)
	if s.sessions[d.ID] == nil {
		s.sessions[d.ID] = map[*session]struct{}{}
	}
	s.sessions[d.ID][p] = struct{}{}
	s.mu.Unlock()
	cc.AddOnClose(func() { s.end(p, "session closed", false) })
	s.armExpiry(p)
	s.log.Info("coap connected", "device", d.ID, "remote", p.remote, "method", p.method)
	// The device may have changed between the handshake and now.
	s.check(p)
}

// check re-evaluates a session against the store: it ends it, or installs
// the device's current permissions and cancels observations no longer allowed.
func (s *Server) check(p *session) {
	if p.ended.Load() {
		return
	}
	p.recheck.Lock()
	d, perms, err := s.o.Auth.Revalidate(p.device, p.claims.Load(), p.device)
	if err != nil {
		p.recheck.Unlock()
		s.end(p, err.Error(), true) // fail closed, store errors included
		return
	}
	if why := p.credentialGone(d); why != "" {
		p.recheck.Unlock()
		s.end(p, why, true)
		return
	}
	p.class.Store(&d.Class)
	p.perms.Store(&perms)
	p.recheck.Unlock()
	p.mu.Lock()
	var drop []*observation
	for _, o := range p.obs {
		// A share's topic outside its hours is held: the observation
		// stays, each notification is refused until the window opens.
		if !perms.Holds(o.topic) {
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
func (s *Server) armExpiry(p *session) {
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
	p.expiry = time.AfterFunc(at.Sub(s.o.Now()), func() { s.end(p, "credential expired", true) })
}

// Recheck re-evaluates every CoAP session of device id against the store.
// It does not block on the network: call it from the store watcher.
func (s *Server) Recheck(id string) {
	for _, p := range s.sessionsOf(id) {
		s.check(p)
	}
}

// allSessions is every live session, copied out so that callers may end or
// re-check them without s.mu held.
func (s *Server) allSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*session
	for _, ps := range s.sessions {
		for p := range ps {
			all = append(all, p)
		}
	}
	return all
}

// RecheckAll re-evaluates every CoAP session (after class changes).
func (s *Server) RecheckAll() {
	for _, p := range s.allSessions() {
		s.check(p)
	}
}

// EndDevice ends every CoAP session of device id, whatever its credential
// (PSK, certificate, token over DTLS or plain UDP), cancelling its
// observations with 4.03, and returns how many it ended. It does not block
// on the network: the store watcher calls it for a device revocation.
func (s *Server) EndDevice(id, reason string) int {
	n := 0
	for _, p := range s.sessionsOf(id) {
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
	all := s.allSessions()
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
	for _, p := range s.allSessions() {
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
		return len(s.sessions[id])
	}
	n := 0
	for _, ps := range s.sessions {
		n += len(ps)
	}
	return n
}

// Observations is the number of live observations of device id.
func (s *Server) Observations(id string) int {
	n := 0
	for _, p := range s.sessionsOf(id) {
		p.mu.Lock()
		n += len(p.obs)
		p.mu.Unlock()
	}
	return n
}

func (s *Server) sessionsOf(id string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.sessions[id]))
	for p := range s.sessions[id] {
		out = append(out, p)
	}
	return out
}

// end ends a session: its observations are unsubscribed at once (no message
// is delivered after end returns) and, when notify, told 4.03 before the
// DTLS session is closed, from a goroutine so the caller never waits on the
// network.
func (s *Server) end(p *session, reason string, notify bool) bool {
	code := codes.Empty
	if notify {
		code = codes.Forbidden
	}
	return s.endWith(p, reason, code)
}

// endWith is end, telling the observers code (none when codes.Empty).
func (s *Server) endWith(p *session, reason string, code codes.Code) bool {
	if !p.ended.CompareAndSwap(false, true) {
		return false
	}
	p.mu.Lock()
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.mu.Unlock()
	s.mu.Lock()
	if ps := s.sessions[p.device]; ps != nil {
		delete(ps, p)
		if len(ps) == 0 {
			delete(s.sessions, p.device)
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
	if len(s.sessions[device]) < maxSessionsPerDevice {
		return
	}
	var idle, any *session
	for q := range s.sessions[device] {
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
	// end takes s.mu itself: drop the session here and finish it outside.
	delete(s.sessions[device], victim)
	go s.endWith(victim, "replaced by a newer session of the device", codes.ServiceUnavailable)
}
