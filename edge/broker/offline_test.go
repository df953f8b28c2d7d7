package broker

import (
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/policy"
)

// A revocation's End racing with the connection's own OnDisconnect never
// leaves the session parked with ended=true (End taking the live path while
// parkOrForget parks it afterwards would keep a revoked session's state,
// and no later End could discard it). The race was seen 1 in 200,000.
func TestEndRacingDisconnectLeavesNothingParked(t *testing.T) {
	b := newTestBroker(t)
	srv := b.Server
	b.Offline = OfflineQueue{Messages: 10}
	hits := 0
	for i := 0; i < 50000; i++ {
		cl := srv.NewClient(nil, "t", "thermo-1", false)
		cl.Properties.ProtocolVersion = 4
		cl.Stop(nil)
		s := thermoSession(cl, policy.Perms{})
		s.Protocol = 4
		s.timer = time.AfterFunc(time.Hour, func() {})
		b.Sessions.add(s)
		srv.Clients.Add(cl)
		done := make(chan struct{})
		go func() { b.End(s, packets.ErrNotAuthorized, "revoked"); close(done) }()
		b.parkOrForget(cl, s, false)
		<-done
		if b.Sessions.get(cl) == s && s.parked.Load() && s.ended.Load() {
			hits++
			b.unpark(s)
		}
		srv.Clients.Delete("thermo-1")
	}
	if hits > 0 {
		t.Fatalf("%d of 50,000: a revoked session was left parked with its state", hits)
	}
}

// The expiry sweep of a full offline queue is linear: each expired message
// moves the counters by itself (a recount per message made a sweep of 1,000
// expired messages allocate 1.1 GB on mochi's event loop).
func TestOfflineExpirySweepIsLinear(t *testing.T) {
	b := newTestBroker(t)
	b.Offline = OfflineQueue{Messages: 1000}
	cl := b.Server.NewClient(nil, "t", "thermo-1", false)
	s := thermoSession(cl, policy.Perms{})
	s.timer = time.AfterFunc(time.Hour, func() {})
	b.Sessions.add(s)
	b.Sessions.park(s)
	now := time.Now().Unix()
	for i := 1; i <= 1000; i++ {
		cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i),
			ProtocolVersion: 5, Expiry: now - 1, TopicName: "devices/thermo-1/commands/set"})
	}
	b.recount(s)
	if s.Queued() != 1000 {
		t.Fatalf("queued %d, want 1000", s.Queued())
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cl.ClearExpiredInflights(now, 0)
	runtime.ReadMemStats(&m1)
	if got := m1.TotalAlloc - m0.TotalAlloc; got > 16<<20 {
		t.Fatalf("sweep of 1,000 expired messages of one offline session allocated %d MB, want a few (one copy of the queue)", got>>20)
	}
	if s.Queued() != 0 || b.OfflineQueued() != 0 {
		t.Fatalf("after the sweep: session queued %d, gateway %d; want 0", s.Queued(), b.OfflineQueued())
	}
}
