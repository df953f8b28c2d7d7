package coap

import (
	"bytes"
	"container/list"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/edge/authn"
)

// Plain UDP (coap://) has no channel security, so nothing about the sender
// is trusted but what each request proves: it must carry a proof of
// possession of the key its access token is bound to (cnf jkt, the device's
// registered key). The proof is a compact JWS, signed with that key, over
// the request itself (method, path and query, payload digest, the token's
// digest), with a time and a unique id so that a captured request cannot be
// replayed, altered or moved to another resource. Bearer tokens, PSKs and
// certificates are not accepted here.
//
// The access token rides in option OptionAccessToken, or is posted once to
// /authz-info (RFC 9200 §5.10.1) and then named by its digest (ath) in each
// proof. Both options are in the experimental range (RFC 7252 §12.2),
// elective and unsafe to forward, so a proxy that does not know them drops
// the request rather than passing the token on.
// The options, proof type and proof are the device's side of the protocol
// (package device); the names here are for the gateway's code and tests.
const (
	OptionAccessToken = device.OptionAccessToken
	OptionProof       = device.OptionProof
	UDPProofType      = device.UDPProofType
	ProofWindow       = device.ProofWindow
)

// Proof is what a plain-UDP request proof signs (device.Proof).
type Proof = device.Proof

// Request is one plain-UDP request to prove (device.Request).
type Request = device.Request

func digest(b []byte) string { return device.Digest(b) }

// Prove signs the proof of one plain-UDP request (device.ProveCoAP).
func Prove(priv jwk.Key, r Request, now time.Time) ([]byte, error) {
	return device.ProveCoAP(priv, r, now)
}

// sameOption reports whether a proof's value for an option is the request's:
// both absent, or both present and equal.
func sameOption(claimed *uint32, r *pool.Message, id message.OptionID) bool {
	v, err := r.GetOptionUint32(id)
	if err != nil {
		return claimed == nil
	}
	return claimed != nil && *claimed == v
}

// requestURI is the path and query a proof covers.
func requestURI(r *pool.Message) string {
	path, _ := r.Options().Path()
	if qs, err := r.Options().Queries(); err == nil && len(qs) > 0 {
		return path + "?" + strings.Join(qs, "&")
	}
	return path
}

// udpState is the plain-UDP listener's memory: tokens posted to /authz-info
// by their digest (a bounded LRU: a flood of tokens forgets the oldest), the
// proof ids already used, and the addresses talking to it.
type udpState struct {
	tokens  *lru.Cache[string, string] // ath -> token
	replays *replayGuard
	addrs   addrTable
}

func newUDPState() *udpState {
	t, _ := lru.New[string, string](10000)
	return &udpState{tokens: t, replays: &replayGuard{perDevice: 8192, total: 200000},
		addrs: addrTable{at: map[*udpClient.Conn]*list.Element{}, unproven: list.New()}}
}

// replayGuard remembers every proof id for as long as its proof could be
// accepted, and never forgets one early: a proof is good from iat-window to
// iat+window, so ids are kept in two generations of 2×window each. When a
// device, or all devices together, have used their share within a
// generation, further proofs are refused rather than older ids evicted
// (fail closed). Only proofs signed by a registered device key get here.
type replayGuard struct {
	perDevice, total int

	mu        sync.Mutex
	start     time.Time
	cur, prev map[string]struct{} // device + "\x00" + jti
	count     map[string]int      // ids per device in cur
}

func (g *replayGuard) use(device, jti string, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur == nil || now.Sub(g.start) > 2*ProofWindow {
		g.prev, g.cur, g.count, g.start = g.cur, map[string]struct{}{}, map[string]int{}, now
	}
	k := device + "\x00" + jti
	if _, ok := g.cur[k]; ok {
		return popErr("the proof was already used (replayed?)")
	}
	if _, ok := g.prev[k]; ok {
		return popErr("the proof was already used (replayed?)")
	}
	if g.count[device] >= g.perDevice || len(g.cur) >= g.total {
		return popErr("too many proofs in the last %s; slow down", 2*ProofWindow)
	}
	g.cur[k] = struct{}{}
	g.count[device]++
	return nil
}

// maxUDPAddrs caps the addresses the plain-UDP listener keeps state for
// (go-coap makes a connection, a goroutine and caches per source address
// before any check). Addresses that have not proven anything may hold only
// maxUnprovenAddrs of them: a new one beyond that takes the place of the
// oldest unproven one, so a spoofer filling the table from forged addresses
// cannot keep a device's new address from being heard, and the rest of the
// table stays for addresses whose first request carried a valid proof.
const (
	maxUDPAddrs      = 4096
	maxUnprovenAddrs = 1024
)

// addrTable is the plain-UDP listener's connections by state: unproven
// ones oldest first, and how many are proven (held by a session).
type addrTable struct {
	mu       sync.Mutex
	at       map[*udpClient.Conn]*list.Element // nil element: proven
	unproven *list.List                        // of *udpClient.Conn
	proven   int
}

// admit takes a new address's connection: false when the table is full of
// proven ones. evict, if not nil, is the unproven connection that made room.
func (t *addrTable) admit(cc *udpClient.Conn) (evict *udpClient.Conn, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unproven.Len() >= maxUnprovenAddrs || t.unproven.Len()+t.proven >= maxUDPAddrs {
		front := t.unproven.Front()
		if front == nil {
			return nil, false
		}
		evict = t.unproven.Remove(front).(*udpClient.Conn)
		delete(t.at, evict)
	}
	t.at[cc] = t.unproven.PushBack(cc)
	return evict, true
}

// promote marks cc proven: false if it is no longer in the table (evicted
// while its first request was checked).
func (t *addrTable) promote(cc *udpClient.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.at[cc]
	if !ok {
		return false
	}
	if e != nil {
		t.unproven.Remove(e)
		t.at[cc] = nil
		t.proven++
	}
	return true
}

func (t *addrTable) remove(cc *udpClient.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.at[cc]
	if !ok {
		return
	}
	if e != nil {
		t.unproven.Remove(e)
	} else {
		t.proven--
	}
	delete(t.at, cc)
}

// UDPAddrs is how many plain-UDP source addresses the listener holds state
// for, proven (by a session) and not, for metrics.
func (s *Server) UDPAddrs() (proven, unproven int) {
	t := &s.udp.addrs
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.proven, t.unproven.Len()
}

// onNewUDPConn admits a new source address into the table.
func (s *Server) onNewUDPConn(cc *udpClient.Conn) {
	evict, ok := s.udp.addrs.admit(cc)
	if evict != nil {
		_ = evict.Close()
	}
	if !ok {
		_ = cc.Close()
		return
	}
	cc.AddOnClose(func() { s.udpClosed(cc) })
}

// udpClosed runs when go-coap lets go of an address. go-coap closes an
// address's connection on any datagram it cannot parse, and anyone can send
// one with the device's address as its source: a live session must not end
// for it, so it is moved to a new connection for the same address.
func (s *Server) udpClosed(cc *udpClient.Conn) {
	s.udp.addrs.remove(cc)
	p, ok := cc.Context().Value(sessionKey{}).(*session)
	if !ok || p.ended.Load() || p.conn() != cc {
		return
	}
	if !s.rebind(p, cc) {
		s.end(p, "session closed", false)
	}
}

// rebind gives p, a live plain-UDP session, a new go-coap connection for
// its address in place of old, which go-coap closed: its observations,
// transfers and token carry on. False if none can be made (the gateway is
// stopping, or the table is full).
func (s *Server) rebind(p *session, old *udpClient.Conn) bool {
	addr, ok := old.RemoteAddr().(*net.UDPAddr)
	if !ok || s.stopping.Load() {
		return false
	}
	nc, err := s.udpSrv.NewConn(addr)
	if err != nil || nc.Context().Err() != nil || !s.udp.addrs.promote(nc) {
		return false
	}
	// Keep the idle clock: a datagram go-coap could not read is not a sign
	// of life.
	if a, ok := old.InactivityMonitor().(*inactivity); ok {
		if b, ok := nc.InactivityMonitor().(*inactivity); ok {
			b.last.Store(a.last.Load())
		}
	}
	nc.SetContextValue(sessionKey{}, p)
	if !p.cc.CompareAndSwap(old, nc) {
		return p.conn() == nc // rebound already, by revive
	}
	s.log.Debug("coap udp session kept on a new connection", "device", p.device, "remote", p.remote, "reason", "an unparseable datagram from its address")
	return true
}

// revive is for a plain-UDP session whose notification failed: if go-coap
// closed its connection (and has not yet let go of it, which it does
// lazily), the session is moved to a new one now. True when it was, so the
// notification may be sent again.
func (s *Server) revive(p *session) bool {
	cc := p.conn()
	if p.method != "token" || p.ended.Load() || cc.Context().Err() == nil || s.stopping.Load() {
		return false
	}
	addr, ok := cc.RemoteAddr().(*net.UDPAddr)
	if !ok {
		return false
	}
	// Asking go-coap for the address's connection finishes the closed one
	// (udpClosed, hence rebind) and returns the new one.
	if _, err := s.udpSrv.NewConn(addr); err != nil {
		return false
	}
	return !p.ended.Load() && p.conn() != cc
}

// handleUDP serves one plain-UDP request: /authz-info takes a token; every
// other request must prove possession of its token's key.
func (s *Server) handleUDP(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if why := badOption(r); why != "" {
		if r.Type() == message.Confirmable {
			s.refuseUDP(w, r, codes.BadOption, why)
		}
		return // a non-confirmable one is rejected: ignored (RFC 7252 §4.3)
	}
	if path, err := r.Options().Path(); err == nil && path == PathAuthzInfo {
		s.authzInfoUDP(w, r)
		return
	}
	p, err := s.udpAuth(w.Conn(), r)
	if err != nil {
		s.log.Warn("coap udp request refused", "remote", w.Conn().RemoteAddr().String(), "reason", authn.ReasonOf(err), "detail", err.Error())
		s.unauthorizedUDP(w, r, err.Error())
		return
	}
	s.serve(w, r, p)
}

// authzInfoUDP keeps a key-bound token for later proofs to name (2.01).
func (s *Server) authzInfoUDP(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	if r.Code() != codes.POST {
		s.refuseUDP(w, r, codes.MethodNotAllowed, "POST the access token")
		return
	}
	body, err := r.ReadBody()
	if err != nil {
		s.refuseUDP(w, r, codes.BadRequest, "cannot read payload")
		return
	}
	if len(body) > maxTokenPost {
		tooLarge(w, maxTokenPost) // smaller than what it answers
		return
	}
	tok, why := tokenOf(body)
	if why != "" {
		s.unauthorizedUDP(w, r, why)
		return
	}
	c, err := s.o.Auth.Verifier.Verify(tok)
	if err == nil && c.Cnf.JKT == "" {
		err = &authn.Error{Reason: authn.ReasonPoPRequired, Detail: "plain UDP takes only tokens bound to the device's key (cnf jkt)"}
	}
	if err == nil {
		// As a CONNECT would be, short of the proof, which comes per request.
		_, err = s.o.Auth.Token(tok, authn.Possession{JKT: c.Cnf.JKT}, c.ClientID)
	}
	if err != nil {
		s.log.Warn("coap token refused", "remote", w.Conn().RemoteAddr().String(), "transport", "udp", "reason", authn.ReasonOf(err), "detail", err.Error())
		s.unauthorizedUDP(w, r, "token refused: "+string(authn.ReasonOf(err)))
		return
	}
	s.udp.tokens.Add(digest([]byte(tok)), tok)
	s.log.Info("coap token stored", "device", c.ClientID, "transport", "udp", "expires", c.Expiry)
	_ = w.SetResponse(codes.Created, message.TextPlain, nil)
}

// udpAuth checks a plain-UDP request's proof and token and returns the
// session of the sender's address, made or updated for that token.
//
// A session already bound to the token the proof names skips what it
// checked when it was bound (the token's signature and claims, the device
// and its key, revocation): the store watcher re-checks sessions on every
// change and a timer ends them at expiry, as for DTLS. Only the proof itself
// (signature, request, freshness, replay) is checked per request.
func (s *Server) udpAuth(cc *udpClient.Conn, r *pool.Message) (*session, error) {
	proof, err := r.Options().GetBytes(OptionProof)
	if err != nil || len(proof) == 0 {
		return nil, popErr("plain UDP requests must carry a proof of possession (option %d) for a key-bound token", OptionProof)
	}
	msg, err := jws.Parse(proof, jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, popErr("the proof is not a compact JWS")
	}
	var claimed Proof
	if err := json.Unmarshal(msg.Payload(), &claimed); err != nil {
		return nil, popErr("the proof payload is not a JSON object")
	}
	tokOpt, _ := r.Options().GetBytes(OptionAccessToken)
	if p, ok := cc.Context().Value(sessionKey{}).(*session); ok && !p.ended.Load() {
		if b := p.binding.Load(); b != nil && b.ath == claimed.ATH && (len(tokOpt) == 0 || digest(tokOpt) == b.ath) {
			if err := checkProofHeader(msg, b.key); err != nil {
				return nil, err
			}
			payload, err := authn.VerifyProofWith(b.key, proof, UDPProofType)
			if err != nil {
				return nil, &authn.Error{Reason: authn.ReasonCnfMismatch, Detail: "proof of possession: " + err.Error()}
			}
			if err := s.checkProof(r, payload, b.ath, p.device); err != nil {
				return nil, err
			}
			return p, nil
		}
	}
	var tok string
	if len(tokOpt) > 0 {
		tok = string(tokOpt)
	} else if t, ok := s.udp.tokens.Get(claimed.ATH); ok {
		tok = t
	} else {
		return nil, popErr("no access token: send it in option %d or POST it to %s first", OptionAccessToken, PathAuthzInfo)
	}
	c, err := s.o.Auth.Verifier.Verify(tok)
	if err != nil {
		return nil, err
	}
	if c.Cnf.JKT == "" {
		return nil, popErr("plain UDP takes only tokens bound to the device's key (cnf jkt)")
	}
	d, err := s.o.Store.Device(c.ClientID)
	if err != nil {
		return nil, &authn.Error{Reason: authn.ReasonUnknownDevice, Detail: fmt.Sprintf("client_id %q is not a device known to this gateway", c.ClientID)}
	}
	if len(d.PublicKey) == 0 {
		return nil, &authn.Error{Reason: authn.ReasonCnfMismatch, Detail: "proof of possession: no public key is registered for the device"}
	}
	key, err := jwk.ParseKey(d.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	if err := checkProofHeader(msg, key); err != nil {
		return nil, err
	}
	payload, err := authn.VerifyProofWith(key, proof, UDPProofType)
	if err != nil {
		return nil, &authn.Error{Reason: authn.ReasonCnfMismatch, Detail: "proof of possession: " + err.Error()}
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("device key thumbprint: %w", err)
	}
	jkt := base64.RawURLEncoding.EncodeToString(thumb)
	if !authn.SameJKT(jkt, c.Cnf.JKT) {
		return nil, &authn.Error{Reason: authn.ReasonCnfMismatch, Detail: "the proof is signed by a key other than the one the token is bound to"}
	}
	ath := digest([]byte(tok))
	if err := s.checkProof(r, payload, ath, c.ClientID); err != nil {
		return nil, err
	}
	pl, err := s.o.Auth.Token(tok, authn.Possession{JKT: jkt}, c.ClientID)
	if err != nil {
		return nil, err
	}
	return s.udpSession(cc, pl, c, &binding{ath: ath, key: key, keyRaw: d.PublicKey})
}

// Plain UDP does not check that a request comes from the address it names,
// so an answer larger than the request would make the gateway an amplifier
// for anyone forging a victim's address: answers to requests that proved
// nothing carry their diagnostic only when they are no larger than the
// request (a device sending a proof gets it; a 4-byte probe gets the bare
// code).

// fits reports whether an answer to r with a body of n bytes (and a
// Content-Format) is no larger than r.
func fits(r *pool.Message, n int) bool {
	size := 4 + len(r.Token())
	if l, err := r.Options().Marshal(nil); err == nil || errors.Is(err, message.ErrTooSmall) {
		size += l
	}
	if b, err := r.BodySize(); err == nil && b > 0 {
		size += 1 + int(b)
	}
	// Same header and token; Content-Format takes at most 3 bytes, then the
	// payload marker and the body.
	return 4+len(r.Token())+3+1+n <= size
}

// refuseUDP answers an unproven plain-UDP request with code, and diag only
// if it fits.
func (s *Server) refuseUDP(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, code codes.Code, diag string) {
	if !fits(r, len(diag)) {
		_ = w.SetResponse(code, message.TextPlain, nil)
		return
	}
	reply(w, code, diag)
}

// unauthorizedUDP is unauthorized for an unproven plain-UDP request: the
// AS Request Creation Hints only if they fit.
func (s *Server) unauthorizedUDP(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, why string) {
	s.Unauthorized.Add(1)
	hint, _ := json.Marshal(map[string]string{"AS": s.o.ASHint, "error": why})
	if !fits(r, len(hint)) {
		_ = w.SetResponse(codes.Unauthorized, message.AppJSON, nil)
		return
	}
	_ = w.SetResponse(codes.Unauthorized, message.AppJSON, bytes.NewReader(hint))
}

// checkProofHeader refuses a proof whose header asks for what the gateway
// does not do: jwx verifies with the algorithm it is given (the device
// key's) whatever the header names, and ignores crit (RFC 7515 §4.1.11: a
// recipient must refuse a crit extension it does not understand, and it
// understands none), so an ES384 header, or a crit such as b64 (RFC 7797),
// would otherwise pass.
func checkProofHeader(msg *jws.Message, key jwk.Key) error {
	h := msg.Signatures()[0].ProtectedHeaders()
	if _, ok := h.Critical(); ok {
		return popErr("the proof's header has crit: no JWS extension is understood here")
	}
	if h.Has("b64") {
		return popErr("the proof's header has b64: the payload must be base64url (RFC 7515)")
	}
	want := jwa.ES256()
	if key.KeyType() == jwa.OKP() {
		want = jwa.EdDSA() // as authn signs and verifies proofs
	}
	if alg, ok := h.Algorithm(); !ok || alg.String() != want.String() {
		return popErr("the proof's header names alg %q; the device key signs %s", alg.String(), want.String())
	}
	return nil
}

func popErr(format string, args ...any) error {
	return &authn.Error{Reason: authn.ReasonPoPRequired, Detail: fmt.Sprintf(format, args...)}
}

// checkProof checks a verified proof's payload against the request: method,
// path and query, token and payload digests, freshness, and that its jti was
// never used before by the device.
func (s *Server) checkProof(r *pool.Message, payload []byte, ath, device string) error {
	var pr Proof
	if err := json.Unmarshal(payload, &pr); err != nil {
		return popErr("the proof payload is not a JSON object")
	}
	body, err := r.ReadBody()
	if err != nil {
		return popErr("cannot read the payload")
	}
	now := s.o.Now()
	switch {
	case pr.Method != r.Code().String():
		return popErr("the proof is for a %s, not this %s", pr.Method, r.Code())
	case pr.URI != requestURI(r):
		return popErr("the proof is for another resource")
	case pr.ATH != ath:
		return popErr("the proof is for another access token")
	case pr.PH != digest(body):
		return popErr("the proof is for another payload")
	case pr.JTI == "" || len(pr.JTI) > 64:
		return popErr("the proof needs a jti of 1 to 64 characters")
	case now.Sub(time.Unix(pr.IAT, 0)).Abs() > ProofWindow:
		return popErr("the proof's iat is more than %s from the gateway's clock", ProofWindow)
	case !sameOption(pr.Observe, r, message.Observe):
		return popErr("the proof does not cover this request's Observe option")
	case !sameOption(pr.ContentFormat, r, message.ContentFormat):
		return popErr("the proof does not cover this request's Content-Format")
	case !sameOption(pr.Block1, r, message.Block1):
		return popErr("the proof does not cover this request's Block1 option")
	}
	tag, _ := r.Options().GetBytes(optRequestTag)
	if pr.RequestTag != base64.RawURLEncoding.EncodeToString(tag) {
		return popErr("the proof does not cover this request's Request-Tag")
	}
	return s.udp.replays.use(device, pr.JTI, now)
}

// binding is what a plain-UDP session was proven with: the token (by its
// digest) and the device key, parsed once.
type binding struct {
	ath    string
	key    jwk.Key
	keyRaw []byte // as registered, to notice a change
}

// udpSession is the session of cc's address: made on its first proven
// request, then updated to each request's token. One address holds one
// device.
func (s *Server) udpSession(cc *udpClient.Conn, pl *authn.Principal, c *authn.Claims, b *binding) (*session, error) {
	s.mu.Lock()
	p, _ := cc.Context().Value(sessionKey{}).(*session)
	fresh := p == nil || p.ended.Load()
	if !fresh && p.device != pl.Device.ID {
		s.mu.Unlock()
		return nil, &authn.Error{Reason: authn.ReasonClientID, Detail: fmt.Sprintf("this address has a session for device %q; the token is for another", p.device)}
	}
	if fresh {
		if !s.o.Connects.Allow(cc.RemoteAddr().String(), s.o.Now()) {
			s.mu.Unlock()
			return nil, errors.New("too many new sessions from this address")
		}
		if !s.udp.addrs.promote(cc) {
			s.mu.Unlock()
			return nil, errors.New("this address was dropped from the table of plain-UDP addresses; send again")
		}
		s.roomFor(pl.Device.ID)
		p = &session{device: pl.Device.ID, method: "token", remote: cc.RemoteAddr().String(), obs: map[string]*observation{}, since: time.Now()}
		p.cc.Store(cc)
		p.used.Store(time.Now().UnixNano())
		cc.SetContextValue(sessionKey{}, p)
		if s.sessions[p.device] == nil {
			s.sessions[p.device] = map[*session]struct{}{}
		}
		s.sessions[p.device][p] = struct{}{}
	}
	old := p.claims.Swap(c)
	p.binding.Store(b)
	p.class.Store(&pl.Device.Class)
	perms := pl.Perms
	p.perms.Store(&perms)
	s.mu.Unlock()
	if !fresh && old != c {
		s.armExpiry(p) // a new token: its own expiry
	}
	if fresh {
		s.armExpiry(p)
		// cc's close is handled by udpClosed (onNewUDPConn).
		s.log.Info("coap connected", "device", p.device, "remote", p.remote, "method", "token", "transport", "udp")
	}
	return p, nil
}
