package broker

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/policy"
)

// The expiry sweep of a full offline queue is linear: each expired message
// moves the counters by itself (a recount per message made a sweep of 1,000
// expired messages allocate 1.1 GB on mochi's event loop).
func TestOfflineExpirySweepIsLinear(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b, _ := New(srv, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Offline = OfflineQueue{Messages: 1000}
	cl := srv.NewClient(nil, "t", "thermo-1", false)
	s := &Session{ClientID: "thermo-1", Device: "thermo-1", cl: cl, Expires: time.Now().Add(time.Hour)}
	s.SetPerms(policy.Perms{})
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
