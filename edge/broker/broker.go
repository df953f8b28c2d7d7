package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/device"
	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/throttle"
	"github.com/edgeid/edgeid/policy"
)

// AuthMethodACE is the MQTT 5 Authentication Method of RFC 9431.
const AuthMethodACE = device.AuthMethodACE

// Events receives what the broker decides, for metrics. Nil fields are skipped.
type Events struct {
	AuthResult func(method string, reason authn.Reason) // reason "" on success
	Kicked     func(reason string)
	// Session is called with +1 when a session starts and -1 when it ends.
	Session func(protocol byte, delta int)
}

// Counters are the broker's message counters, bumped without allocation on
// the message path and read by the metrics collector.
type Counters struct {
	MessagesIn, MessagesOut, BytesIn, BytesOut, Denied, Throttled atomic.Uint64
	// OfflineQueued counts messages queued for offline sessions,
	// OfflineDropped those dropped from a full offline queue (oldest first).
	OfflineQueued, OfflineDropped atomic.Uint64
}

// Broker is the gateway's MQTT broker with its hooks.
type Broker struct {
	Server   *mqtt.Server
	Sessions *Sessions
	Auth     *authn.Authenticator
	Log      *slog.Logger
	Events   Events
	Counters Counters
	Now      func() time.Time
	// Gen counts store changes seen. A CONNECT authenticated under an older
	// Gen is re-checked once its session is registered, so a revocation that
	// lands between the two is never missed.
	Gen atomic.Uint64
	// Recheck re-evaluates a live session against the store.
	Recheck func(*Session)
	// Connects limits CONNECT attempts per source address; nil for no limit.
	Connects *throttle.ConnectLimiter
	// PairRelay answers a device's pairing request published on
	// $edgeid/pair/<device>/request; nil turns the relay off.
	PairRelay func(ctx context.Context, device string, request []byte) []byte
	// Throttle decides each PUBLISH's rate (throttleHook), per device, per
	// token subject and per device class, as it does for CoAP; nil allows
	// everything. See throttle.Gate.
	Throttle *throttle.Gate
	// Gate, when it returns an error, refuses new token connects with 0x88:
	// the store is too stale, or the clock cannot be trusted to judge token
	// times. nil never refuses.
	Gate func() *authn.Error
	// ConnectRead, when set, is told (with the connection's remote address)
	// that a connection has sent its whole CONNECT: it is no longer half-open.
	ConnectRead func(remote string)

	// UMA, when set, is asked about SUBSCRIBE filters refused to an MQTT 5
	// session (0x87) other than those of its shares outside their hours:
	// shared is false when none is an owner's shared resource (the SUBACK
	// stays as it is; the authority is not called), else the permission
	// ticket and where to take it, or why there is none. It runs on the
	// client's read loop, under a 2 s context. See uma.go.
	UMA func(ctx context.Context, subject string, filters []string) (t Ticket, shared bool)

	// MaxQoS2 caps unreleased QoS 2 PUBLISHes over the whole gateway (each
	// client is held to its Receive Maximum by mochi); 0 for no cap.
	MaxQoS2 int64
	// Offline bounds what is queued for each offline persistent session;
	// zero Messages keeps no session for a device that is away.
	Offline OfflineQueue

	pending      sync.Map     // *mqtt.Client -> pendingAuth, from OnConnect to OnSessionEstablish
	parkedQueued atomic.Int64 // messages held for offline sessions, all together
}

// OfflineQueued is how many messages are held for offline sessions.
func (b *Broker) OfflineQueued() int64 { return b.parkedQueued.Load() }

type pendingAuth struct {
	p   *authn.Principal
	gen uint64
}

// New wraps server with the EdgeID hooks. Add listeners, then Serve.
func New(server *mqtt.Server, auth *authn.Authenticator, log *slog.Logger) (*Broker, error) {
	b := &Broker{Server: server, Sessions: NewSessions(), Auth: auth, Log: log, Now: time.Now}
	// In this order: mochi runs hooks in the order they were added.
	for _, h := range []struct {
		name string
		hook mqtt.Hook
	}{
		{"auth", &authHook{b: b}},
		{"acl", &aclHook{b: b}},
		{"pairing", &pairHook{b: b}},
		{"throttle", &throttleHook{b: b}},
		{"offline queue", &offlineHook{b: b}},
		{"stats", &statsHook{b: b}},
		{"uma", &umaHook{b: b}},
	} {
		if err := server.AddHook(h.hook, nil); err != nil {
			return nil, fmt.Errorf("add %s hook: %w", h.name, err)
		}
	}
	return b, nil
}

// credentials extracts the token (if any) and the TLS client certificate chain (if any).
func credentials(cl *mqtt.Client, pk packets.Packet) (token string, chain []*x509.Certificate, err *authn.Error) {
	if c, ok := cl.Net.Conn.(*tls.Conn); ok {
		chain = c.ConnectionState().PeerCertificates
	}
	if m := pk.Properties.AuthenticationMethod; pk.ProtocolVersion == 5 && m != "" {
		if m != AuthMethodACE {
			return "", nil, &authn.Error{Reason: authn.ReasonBadMethod, Detail: fmt.Sprintf("authentication method %q is not supported; use %q", m, AuthMethodACE)}
		}
		if len(pk.Properties.AuthenticationData) == 0 {
			return "", nil, &authn.Error{Reason: authn.ReasonMalformed, Detail: "authentication method ace without a token in Authentication Data"}
		}
		return string(pk.Properties.AuthenticationData), chain, nil
	}
	if pk.Connect.PasswordFlag && len(pk.Connect.Password) > 0 {
		return string(pk.Connect.Password), chain, nil
	}
	return "", chain, nil
}

// authenticate decides a CONNECT. It returns the principal or the reason code to refuse with.
func (b *Broker) authenticate(cl *mqtt.Client, pk packets.Packet) (*authn.Principal, packets.Code, error) {
	token, chain, cerr := credentials(cl, pk)
	if cerr != nil {
		code := packets.ErrBadUsernameOrPassword
		if cerr.Reason == authn.ReasonBadMethod {
			code = packets.ErrBadAuthenticationMethod
		}
		return nil, code, cerr
	}
	var p *authn.Principal
	var err error
	if token != "" && b.Gate != nil {
		if err := b.Gate(); err != nil {
			return nil, packets.ErrServerUnavailable, err
		}
	}
	if token != "" {
		var leaf *x509.Certificate
		if len(chain) > 0 {
			leaf = chain[0]
		}
		proven := ""
		if pk.ProtocolVersion == 5 && pk.Properties.AuthenticationMethod == AuthMethodACE {
			if proven, err = b.challenge(cl, token, pk.Connect.ClientIdentifier); err != nil {
				if _, ok := err.(*authn.Error); !ok {
					err = &authn.Error{Reason: authn.ReasonPoPRequired, Detail: err.Error()}
				}
				return nil, packets.ErrNotAuthorized, err
			}
		}
		p, err = b.Auth.Token(token, authn.Possession{Cert: leaf, JKT: proven}, pk.Connect.ClientIdentifier)
	} else {
		p, err = b.Auth.Certificate(chain, pk.Connect.ClientIdentifier)
	}
	if err != nil {
		if authn.ReasonOf(err).BadCredentials() {
			return nil, packets.ErrBadUsernameOrPassword, err
		}
		return nil, packets.ErrNotAuthorized, err
	}
	// The client id is the device id: anything else would let one device take
	// over another's session (mochi ends the older session of a client id).
	// "inline" is mochi's own inline client, which the CoAP side publishes through.
	if pk.Connect.ClientIdentifier == "inline" || p.Device.ID == "inline" {
		return nil, packets.ErrClientIdentifierNotValid, &authn.Error{Reason: authn.ReasonClientID, Detail: `client id "inline" is reserved`}
	}
	if pk.Connect.ClientIdentifier == "" {
		cl.ID = p.Device.ID
		if pk.ProtocolVersion == 5 {
			cl.Properties.Props.AssignedClientID = p.Device.ID
		}
	} else if pk.Connect.ClientIdentifier != p.Device.ID {
		return nil, packets.ErrClientIdentifierNotValid, &authn.Error{Reason: authn.ReasonClientID,
			Detail: fmt.Sprintf("client id %q is not the device id %q", pk.Connect.ClientIdentifier, p.Device.ID)}
	}
	// A delayed Will is checked again when it is due (patched mochi asks
	// OnACLCheck), so a device revoked meanwhile publishes nothing.
	if pk.Connect.WillFlag && !p.Perms.CanPublish(pk.Connect.WillTopic) {
		return nil, packets.ErrNotAuthorized, &authn.Error{Reason: authn.ReasonWillDenied,
			Detail: fmt.Sprintf("will topic %q is not allowed for publish", pk.Connect.WillTopic)}
	}
	return p, packets.CodeSuccess, nil
}

// refuse answers CONNACK with code (mapped to the 3.1.1 return codes for old clients).
func (b *Broker) refuse(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = b.Server.SendConnack(cl, code, false, nil)
		return
	}
	rc := packets.Err3NotAuthorized.Code
	switch code {
	case packets.ErrBadUsernameOrPassword, packets.ErrBadAuthenticationMethod:
		rc = packets.ErrMalformedUsernameOrPassword.Code // 0x04: bad user name or password
	case packets.ErrClientIdentifierNotValid:
		rc = packets.Err3ClientIdentifierNotValid.Code
	case packets.ErrServerUnavailable, packets.ErrServerBusy, packets.ErrConnectionRateExceeded:
		rc = packets.Err3ServerUnavailable.Code
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: rc})
}

func (b *Broker) startSession(cl *mqtt.Client, p *authn.Principal) *Session {
	s := b.newSession(cl, p)
	b.Sessions.add(s)
	if b.Events.Session != nil {
		b.Events.Session(s.Protocol, 1)
	}
	b.armTimer(s)
	return s
}

// armTimer ends s when its credential does.
func (b *Broker) armTimer(s *Session) {
	s.timer = time.AfterFunc(s.Expires.Sub(b.Now()), func() {
		b.End(s, packets.ErrNotAuthorized, "credential expired")
	})
}

func (b *Broker) newSession(cl *mqtt.Client, p *authn.Principal) *Session {
	s := &Session{
		ClientID: cl.ID, Device: p.Device.ID, Owner: p.Device.Owner,
		Method: p.Method, CertSHA256: p.CertSHA256, CertIssuer: p.CertIssuer, CertSerial: p.CertSerial, Remote: cl.Net.Remote,
		Protocol: cl.Properties.ProtocolVersion, ConnectedAt: b.Now(), Expires: p.Expires, cl: cl,
		// Read here, on the client's own goroutine: mochi later resets the
		// Will without atomics on a clean DISCONNECT.
		will: atomic.LoadUint32(&cl.Properties.Will.Flag) == 1,
	}
	class := p.Device.Class
	s.class.Store(&class)
	if c := p.Claims; c != nil {
		s.claims, s.Issuer, s.Subject, s.JTI, s.IssuedAt = c, c.Issuer, c.Subject, c.JTI, c.IssuedAt
	}
	s.SetPerms(p.Perms)
	return s
}

// End disconnects a session because its credential or permission is gone:
// MQTT 5 clients get DISCONNECT with code, 3.1.1 clients a closed socket (the
// spec has no server DISCONNECT for them). The Will is not sent: a revoked
// device must not publish anything more.
func (b *Broker) End(s *Session, code packets.Code, reason string) bool {
	if !s.ended.CompareAndSwap(false, true) {
		return false
	}
	if s.parked.Load() {
		b.endOffline(s, reason)
		if b.Events.Kicked != nil {
			b.Events.Kicked(reason)
		}
		return true
	}
	if s.will {
		atomic.StoreUint32(&s.cl.Properties.Will.Flag, 0)
	}
	b.Log.Warn("session ended", "device", s.Device, "client", s.ClientID, "remote", s.Remote, "reason", reason, "code", fmt.Sprintf("0x%02x", code.Code))
	if b.Events.Kicked != nil {
		b.Events.Kicked(reason)
	}
	// Never block the caller (a store watcher holding the store lock) on a
	// client that does not read: write the DISCONNECT with a deadline, from
	// a goroutine. The session is already refused everything (ended is set).
	cl := s.cl
	go func() {
		defer func() { // a DISCONNECT that fails to encode must not stop the process
			if r := recover(); r != nil {
				b.Log.Error("ending a session panicked; connection closed", "client", s.ClientID, "panic", fmt.Sprint(r))
				cl.Stop(code)
			}
		}()
		if cl.Net.Conn != nil {
			_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		}
		if s.Protocol == 5 {
			_ = b.Server.DisconnectClient(cl, code)
		} else {
			cl.Stop(code)
		}
	}()
	return true
}

// Kick ends every given session with 0x87 and returns how many it ended.
func (b *Broker) Kick(sessions []*Session, reason string) int {
	n := 0
	for _, s := range sessions {
		// A connection already closing (its client gone, the registry not
		// yet told) is ended too, but not counted as kicked.
		closing := s.cl != nil && s.cl.Closed() // offline sessions too
		if b.End(s, packets.ErrNotAuthorized, reason) && !closing {
			n++
		}
	}
	return n
}

// SetPermissions installs a session's current class (its rate limits
// follow it) and permissions: subscriptions and queued messages no longer
// allowed are removed, and a Will no longer allowed is dropped.
func (b *Broker) SetPermissions(s *Session, class string, p policy.Perms) {
	s.class.Store(&class)
	s.SetPerms(p)
	b.dropForbidden(s)
	b.dropQueued(s)
}

func (b *Broker) dropForbidden(s *Session) {
	cl := s.cl
	if s.ended.Load() {
		return
	}
	if cur, ok := b.Server.Clients.Get(cl.ID); ok && cur != cl {
		return // taken over: the topic index now belongs to the successor
	}
	p := s.Perms()
	for filter := range cl.State.Subscriptions.GetAll() {
		// Held: a share's topic outside its hours keeps its subscription
		// (each delivery is still refused by OnACLCheck), so that it
		// delivers again when the window opens.
		if p.Holds(sharedFilter(filter)) {
			continue
		}
		if ok, mine := pairTopicAllowed(filter, s.Device, false); mine && ok && b.PairRelay != nil {
			continue // the device's own pairing answers, whatever its class
		}
		b.Server.Topics.Unsubscribe(filter, cl.ID)
		cl.State.Subscriptions.Delete(filter)
		b.Log.Info("subscription dropped", "device", s.Device, "client", s.ClientID, "filter", filter, "reason", "no longer allowed")
	}
	// Only a session that connected with a Will has one to drop: touching
	// the Will of others would race with mochi clearing it on DISCONNECT.
	if s.will && atomic.LoadUint32(&cl.Properties.Will.Flag) == 1 && !p.CanPublish(cl.Properties.Will.TopicName) {
		atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	}
}

// authHook authenticates CONNECTs and tracks sessions.
type authHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *authHook) ID() string { return "edgeid-auth" }

// Provides is asked for every hook on every event (mochi's Hooks): a
// switch, not bytes.Contains (with the other hooks', 3% of the broker's CPU
// under a QoS 0 load).
func (h *authHook) Provides(x byte) bool {
	switch x {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnAuthPacket:
		return true
	}
	return false
}

// OnConnect authenticates, because only here can we answer a reason code of
// our own choosing (OnConnectAuthenticate false always answers 0x86).
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	if b.ConnectRead != nil {
		b.ConnectRead(cl.Net.Remote)
	}
	if !b.Connects.Allow(cl.Net.Remote, b.Now()) {
		b.Log.Warn("connect refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote,
			"reason", "connect_rate", "detail", "too many connects from this address", "code", "0x9f")
		if b.Events.AuthResult != nil {
			b.Events.AuthResult("any", "connect_rate")
		}
		b.refuse(cl, packets.ErrConnectionRateExceeded)
		return packets.ErrConnectionRateExceeded
	}
	gen := b.Gen.Load()
	p, code, err := b.authenticate(cl, pk)
	method := "certificate"
	if m := pk.Properties.AuthenticationMethod; pk.ProtocolVersion == 5 && m != "" {
		if m == AuthMethodACE && len(pk.Properties.AuthenticationData) > 0 {
			method = "token" // as credentials() decides, without a second look at the TLS state
		}
	} else if pk.Connect.PasswordFlag && len(pk.Connect.Password) > 0 {
		method = "token"
	}
	if err != nil {
		reason := authn.ReasonOf(err)
		if b.Events.AuthResult != nil {
			b.Events.AuthResult(method, reason)
		}
		b.Log.Warn("connect refused", "client", pk.Connect.ClientIdentifier, "remote", cl.Net.Remote,
			"method", method, "reason", reason, "detail", err.Error(), "code", fmt.Sprintf("0x%02x", code.Code))
		b.refuse(cl, code)
		return code
	}
	if b.Events.AuthResult != nil {
		b.Events.AuthResult(method, "")
	}
	b.pending.Store(cl, pendingAuth{p: p, gen: gen})
	return nil
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	_, ok := h.b.pending.Load(cl)
	return ok
}

func (h *authHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.b.pending.LoadAndDelete(cl)
	if !ok {
		cl.Stop(packets.ErrNotAuthorized) // cannot happen: OnConnectAuthenticate refused it
		return
	}
	pa := v.(pendingAuth)
	s := h.b.startSession(cl, pa.p)
	h.b.takeOver(s)
	h.b.Log.Info("connected", "device", s.Device, "client", s.ClientID, "remote", s.Remote, "method", s.Method, "protocol", s.Protocol)
	if h.b.Gen.Load() != pa.gen && h.b.Recheck != nil {
		h.b.Recheck(s)
	}
}

// OnSessionEstablished re-checks subscriptions inherited from an earlier
// connection of the same client id: they were granted to an older credential.
func (h *authHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if s := h.b.Sessions.get(cl); s != nil {
		h.b.takeOver(s)
		h.b.dropForbidden(s)
	}
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.b.pending.Delete(cl)
	if s := h.b.Sessions.get(cl); s != nil && !s.parked.Load() {
		h.b.parkOrForget(cl, s, expire)
		if h.b.Events.Session != nil {
			h.b.Events.Session(s.Protocol, -1)
		}
		h.b.Log.Info("disconnected", "device", s.Device, "client", s.ClientID, "remote", s.Remote, "err", err, "offline_session", s.parked.Load())
	}
}

// aclHook authorizes every PUBLISH, SUBSCRIBE filter and delivery. It is the
// per-message hot path: a map lookup, a clock read and a filter match.
type aclHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *aclHook) ID() string { return "edgeid-acl" }

func (h *aclHook) Provides(x byte) bool { return x == mqtt.OnACLCheck }

// OnACLCheck: write is a PUBLISH from cl; otherwise topic is a SUBSCRIBE
// filter or the topic of a message about to be delivered to cl, and both are
// "may cl subscribe to this" (a topic name is a filter matching only itself).
func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.b.Sessions.get(cl)
	if s == nil || s.ended.Load() || !h.b.Now().Before(s.Expires) {
		return false
	}
	if len(topic) > len(pairPrefix) && topic[0] == '$' && h.b.PairRelay != nil {
		if ok, mine := pairTopicAllowed(topic, s.Device, write); mine {
			return ok
		}
	}
	p := s.perms.Load()
	memo := &s.memoRead
	if write {
		memo = &s.memoWrite
	}
	var ok bool
	if m := memo.Load(); m != nil && m.perms == p && m.topic == topic {
		ok = m.ok
	} else {
		if write {
			ok = p.CanPublish(topic)
		} else {
			ok = p.CanSubscribe(sharedFilter(topic))
		}
		// A topic that keeps changing (a wildcard subscriber's deliveries
		// from many devices) would allocate a memo on every check and make
		// every publisher write this subscriber's one pointer: after the
		// first memo under these permissions, only one miss in eight is
		// stored. A steady topic settles after a few messages.
		// The topic is copied: mochi's points into the packet's buffer,
		// which a memo would keep alive, payload and all.
		if len(topic) <= aclMemoMaxTopic && (m == nil || m.perms != p || rand.Uint32()&7 == 0) {
			memo.Store(&aclMemo{perms: p, topic: strings.Clone(topic), ok: ok})
		}
	}
	if !ok {
		h.b.Counters.Denied.Add(1)
	}
	return ok
}

// statsHook counts messages in and out for the metrics.
type statsHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *statsHook) ID() string { return "edgeid-stats" }

func (h *statsHook) Provides(x byte) bool { return x == mqtt.OnPublished || x == mqtt.OnPacketSent }

// OnPublished counts an accepted PUBLISH from a client.
func (h *statsHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	h.b.Counters.MessagesIn.Add(1)
	h.b.Counters.BytesIn.Add(uint64(len(pk.Payload)))
}

// OnPacketSent counts a PUBLISH delivered to a client.
func (h *statsHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, b []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		h.b.Counters.MessagesOut.Add(1)
		h.b.Counters.BytesOut.Add(uint64(len(pk.Payload)))
	}
}

// sharedFilter strips the MQTT 5 shared-subscription prefix
// ($share/<group>/<filter>): what is granted is the filter, whatever the group.
// A malformed shared filter is returned whole and so matches nothing granted.
func sharedFilter(f string) string {
	const p = "$share/"
	if !strings.HasPrefix(f, p) {
		return f
	}
	i := strings.IndexByte(f[len(p):], '/')
	if i <= 0 {
		return f
	}
	return f[len(p)+i+1:]
}

// throttleHook slows, then refuses, senders over their rate: PUBACK 0x97
// (quota exceeded) for MQTT 5 QoS > 0, a silent drop (counted) otherwise, and
// DISCONNECT 0x96 (message rate too high) when refusals go on.
type throttleHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *throttleHook) ID() string { return "edgeid-throttle" }

func (h *throttleHook) Provides(x byte) bool { return x == mqtt.OnPublish }

func (h *throttleHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl.Net.Inline {
		return pk, nil
	}
	// Every unreleased QoS 2 PUBLISH is held (its PUBREC stored) until the
	// sender's PUBREL, also while the sender is away: bound them all.
	if pk.FixedHeader.Qos == 2 && b.MaxQoS2 > 0 && b.Server.QoS2Held.Load() >= b.MaxQoS2 {
		b.Counters.Throttled.Add(1)
		if cl.Properties.ProtocolVersion == 5 {
			return pk, packets.ErrQuotaExceeded // PUBREC 0x97
		}
		return pk, packets.ErrRejectPacket
	}
	if !b.Throttle.Enabled() {
		return pk, nil
	}
	s := b.Sessions.get(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	// The byte rate counts the whole packet: data in user properties costs
	// what data in the payload does.
	switch b.Throttle.Decide(s.Device, s.Class(), s.Subject, pk.FixedHeader.Remaining, b.Now()) {
	case throttle.Allow:
		return pk, nil
	case throttle.Disconnect:
		b.End(s, packets.ErrMessageRateTooHigh, "message rate too high")
		return pk, packets.ErrRejectPacket
	}
	b.Counters.Throttled.Add(1)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, packets.ErrQuotaExceeded
	}
	return pk, packets.ErrRejectPacket
}
