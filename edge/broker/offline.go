package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// OfflineQueue bounds what is kept for one offline persistent session. A
// zero Messages keeps no session for a device that is away.
type OfflineQueue struct {
	Messages int
	Bytes    int64
}

// A persistent session (MQTT 5 clean_start=0 with a session expiry, or 3.1.1
// clean_session=0) outlives its connection. Its Session stays registered,
// parked, with the permissions and credential end it last had, so that
// mochi's delivery check (OnACLCheck) queues for it exactly what that
// permission allows, and every store change reaches it as it reaches live
// sessions: a class change drops the subscriptions and queued messages it
// no longer allows, and a revocation, deletion, kick or credential expiry
// ends it and discards its state. At reconnect the new connection's session
// replaces it, and patched mochi re-checks each queued message against the
// new credential as it is resent.

// parkOrForget decides what happens to the state of a session whose
// connection is gone: kept offline, or discarded.
func (b *Broker) parkOrForget(cl *mqtt.Client, s *Session, expire bool) {
	if expire || cl.IsTakenOver() {
		b.Sessions.remove(cl)
		s.timer.Stop()
		return
	}
	if s.ended.Load() || b.Offline.Messages <= 0 {
		// Ended for cause (revoked, expired, kicked) or no offline queue:
		// nothing of the session may outlive the connection.
		b.Sessions.remove(cl)
		s.timer.Stop()
		b.forget(cl)
		return
	}
	if !b.Sessions.park(s) {
		if s.ended.Load() { // ended between the check above and park
			b.Sessions.remove(cl)
			s.timer.Stop()
			b.forget(cl)
		}
		return
	}
	// End sets ended, then looks at parked; park sets parked, then looks at
	// ended: whichever ran second sees the other, so a revocation racing
	// the disconnect never leaves a kept session behind.
	if s.ended.Load() {
		b.unpark(s)
		b.forget(cl)
		return
	}
	b.recount(s)
	b.trim(s)
	// A reconnect may have taken the session over while it was parked.
	if cl.IsTakenOver() {
		b.unpark(s)
		return
	}
	if cur, ok := b.Server.Clients.Get(cl.ID); !ok || cur != cl {
		b.unpark(s)
	}
}

// unpark removes an offline session from the registry, leaving mochi's
// state to whoever holds it now.
func (b *Broker) unpark(s *Session) {
	if s.parked.Load() && b.Sessions.remove(s.cl) == s {
		s.timer.Stop()
		b.parkedQueued.Add(-s.queued.Swap(0))
	}
}

// takeOver drops the offline session of the client id a new connection
// uses: the new session holds (or, with clean start, has discarded) its state.
func (b *Broker) takeOver(s *Session) {
	for _, o := range b.Sessions.ByDevice(s.Device) {
		if o != s && o.parked.Load() && o.ClientID == s.ClientID {
			b.unpark(o)
		}
	}
}

// forget discards mochi's persistent state of cl (subscriptions, queued
// and inflight messages, the session itself), unless a newer connection of
// the same client id has taken it over.
func (b *Broker) forget(cl *mqtt.Client) {
	// EndSession checks and discards under the lock a reconnect takes to
	// take the session over: checked here and discarded after, a reconnect
	// in between lost its own subscriptions.
	b.Server.EndSession(cl)
}

// endOffline ends an offline session for cause: its state is discarded.
func (b *Broker) endOffline(s *Session, reason string) {
	n := s.queued.Load()
	b.unpark(s)
	b.forget(s.cl)
	b.Log.Warn("offline session ended", "device", s.Device, "client", s.ClientID, "reason", reason, "discarded", n)
}

func msgSize(pk *packets.Packet) int64 { return int64(len(pk.TopicName) + len(pk.Payload)) }

// recount sets an offline session's counters from what mochi holds for it.
func (b *Broker) recount(s *Session) {
	var n, size int64
	for _, pk := range s.cl.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type == packets.Publish {
			n++
			size += msgSize(&pk)
		}
	}
	b.parkedQueued.Add(n - s.queued.Swap(n))
	s.queuedBytes.Store(size)
}

// trim drops the oldest queued messages of an offline session until it is
// within the offline queue's bounds.
func (b *Broker) trim(s *Session) {
	max := b.Offline
	for s.queued.Load() > int64(max.Messages) || (max.Bytes > 0 && s.queuedBytes.Load() > max.Bytes) {
		oldest, ok := s.cl.State.Inflight.Oldest(packets.Publish) // no copy of the queue per message
		if !ok {
			b.recount(s)
			return
		}
		if !s.cl.DiscardInflight(oldest) {
			continue
		}
		s.queued.Add(-1)
		b.parkedQueued.Add(-1)
		s.queuedBytes.Add(-msgSize(&oldest))
		b.Counters.OfflineDropped.Add(1)
		b.Log.Warn("offline queue full; oldest message dropped", "device", s.Device, "client", s.ClientID,
			"topic", oldest.TopicName, "queued", s.queued.Load(), "bytes", s.queuedBytes.Load())
	}
}

// dropQueued discards the queued and inflight messages of s that its
// current permission no longer allows (after a class or scope change).
func (b *Broker) dropQueued(s *Session) {
	p := s.Perms()
	n := 0
	for _, pk := range s.cl.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type != packets.Publish || p.CanSubscribe(pk.TopicName) {
			continue
		}
		if s.cl.DiscardInflight(pk) {
			n++
		}
	}
	if n > 0 {
		b.Log.Info("queued messages dropped", "device", s.Device, "client", s.ClientID, "count", n, "reason", "no longer allowed")
		if s.parked.Load() {
			b.recount(s)
		}
	}
}

// offlineHook counts and bounds what is queued for offline sessions.
type offlineHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *offlineHook) ID() string { return "edgeid-offline" }

func (h *offlineHook) Provides(x byte) bool {
	return x == mqtt.OnQosPublish || x == mqtt.OnQosDropped || x == mqtt.OnClientExpired
}

// OnQosPublish runs when a QoS 1/2 message is stored for a client: for an
// offline one it joins the queue, whose bounds drop the oldest.
func (h *offlineHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type != packets.Publish || resends > 0 {
		return
	}
	s := h.b.Sessions.get(cl)
	if s == nil || !s.parked.Load() {
		return
	}
	s.queued.Add(1)
	h.b.parkedQueued.Add(1)
	s.queuedBytes.Add(msgSize(&pk))
	h.b.Counters.OfflineQueued.Add(1)
	h.b.trim(s)
}

// OnQosDropped: a message left an offline session's queue (expired).
// mochi passes the whole packet, so the counters move by it alone: a
// recount per message made a sweep of a full queue quadratic.
func (h *offlineHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	s := h.b.Sessions.get(cl)
	if s == nil || !s.parked.Load() || pk.FixedHeader.Type != packets.Publish {
		return
	}
	if s.queued.Add(-1) < 0 { // never below zero, whatever raced
		h.b.recount(s)
		return
	}
	h.b.parkedQueued.Add(-1)
	s.queuedBytes.Add(-msgSize(&pk))
}

// OnClientExpired: mochi ended an offline session at its session expiry.
func (h *offlineHook) OnClientExpired(cl *mqtt.Client) {
	if s := h.b.Sessions.get(cl); s != nil {
		h.b.unpark(s)
	}
	h.b.Server.UnsubscribeClient(cl)
	cl.ClearInflights()
}
