package broker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/policy"
)

// A revocation's End racing with the connection's own OnDisconnect never
// leaves the session parked with ended=true (End taking the live path while
// parkOrForget parks it afterwards would keep a revoked session's state,
// and no later End could discard it). The race was seen 1 in 200,000.
func TestEndRacingDisconnectLeavesNothingParked(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	b, err := New(srv, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.Offline = OfflineQueue{Messages: 10}
	hits := 0
	for i := 0; i < 50000; i++ {
		cl := srv.NewClient(nil, "t", "thermo-1", false)
		cl.Properties.ProtocolVersion = 4
		cl.Stop(nil)
		s := &Session{ClientID: "thermo-1", Device: "thermo-1", cl: cl, Expires: time.Now().Add(time.Hour), Protocol: 4}
		s.SetPerms(policy.Perms{})
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
