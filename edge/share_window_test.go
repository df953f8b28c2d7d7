package edge_test

import (
	"strings"
	"testing"
	"time"

	_ "time/tzdata" // the gateway's time zone below, whatever this system has

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/internal/clock"
	"github.com/edgeid/edgeid/store"
)

// A share's daily window is read in the gateway's time zone and judged by
// the gateway's clock: live sessions lose the shared topics when it closes
// (their subscriptions kept, nothing delivered) and get them back when it
// opens, offline, at the boundary. The clock is a fake the test moves; the
// test waits for the gateway's re-check at each instant, never for time.
func TestShareWindowOpensAndClosesLive(t *testing.T) {
	g := startHTTP(t, func(c *config.Config) { c.Gateway.TimeZone = "Asia/Tokyo" }) // UTC+9, no daylight saving
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	at := func(day, hour, minute int) time.Time { return time.Date(2026, 12, day, hour, minute, 0, 0, tokyo) }
	fake := clock.NewFake(at(2, 9, 30).UTC()) // inside 09:00-17:00 Tokyo (00:30 UTC)
	g.g.SetClock(fake)
	b := shareParties()
	windowed := share("s-day", "bob", "telemetry", "sub")
	windowed.Window = &store.Window{From: "09:00", To: "17:00"}
	b.Grants = []store.Grant{windowed, share("s-status", "bob", "status", "sub")}
	g.apply(t, b)
	tok := g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-day"}, perm{"thermo-1/status", "s-status"})

	bob := g.connectAsking(t, "bob-phone", tok)
	if rc := bob.subscribe(t, "devices/thermo-1/telemetry/#", "devices/thermo-1/status"); rc[0] != 1 || rc[1] != 1 {
		t.Fatalf("subscribe within the window: %v", rc)
	}
	st := g.openStream(t, tok, "devices/thermo-1/telemetry/#")
	t1 := g.mustConnect(connOpts{clientID: "thermo-1", token: g.token("thermo-1", "alice", nil)})
	t1.publish(t, "devices/thermo-1/telemetry/temp", "in-1", 1)
	bob.expectMsg(t, "devices/thermo-1/telemetry/temp", "in-1")
	if l := st.waitLine(t, "data:"); !strings.Contains(l, "in-1") {
		t.Fatalf("event stream within the window: %s", l)
	}

	// moveTo sets the clock and waits for the gateway to have re-checked
	// the sessions presenting shares at (or after) that time.
	moveTo := func(when time.Time) {
		t.Helper()
		fake.Set(when.UTC())
		waitFor(t, "the share clock's re-check at "+when.String(), func() bool { return !g.g.SharesCheckedAt().Before(when) })
	}
	subscribed := func() bool {
		cl, ok := g.g.Broker.Server.Clients.Get("bob-phone")
		if !ok {
			return false
		}
		_, ok = cl.State.Subscriptions.Get("devices/thermo-1/telemetry/#")
		return ok
	}

	// 17:05 Tokyo: the window is closed. The session and the stream stay,
	// the subscription is kept, and nothing is delivered: the status marker,
	// published after the reading, arrives first.
	moveTo(at(2, 17, 5))
	t1.publish(t, "devices/thermo-1/telemetry/temp", "out-1", 1)
	t1.publish(t, "devices/thermo-1/status", "marker-1", 1)
	bob.expectNoMsgBefore(t, "devices/thermo-1/telemetry/temp", "devices/thermo-1/status", "marker-1")
	if !subscribed() {
		t.Error("outside the window the subscription was dropped; want it held")
	}
	if n := len(g.g.HTTP.Streams("bob-phone")); n != 1 {
		t.Errorf("outside the window %d event streams, want the one held open", n)
	}
	// A new subscription outside the window is refused, saying why.
	if sa := bob.suback(t, "devices/thermo-1/telemetry/hum"); sa.Reasons[0] != 0x87 || !strings.Contains(sa.Properties.ReasonString, "outside its hours") {
		t.Errorf("subscribe outside the window: %s %q", hexCode(sa.Reasons[0]), sa.Properties.ReasonString)
	}

	// 09:00 Tokyo the next day, the instant it opens: delivered again, on
	// the same session and stream (the stream's next event is this one,
	// so out-1 never reached it).
	moveTo(at(3, 9, 0))
	t1.publish(t, "devices/thermo-1/telemetry/temp", "in-2", 1)
	bob.expectMsg(t, "devices/thermo-1/telemetry/temp", "in-2")
	if l := st.waitLine(t, "data:"); !strings.Contains(l, "in-2") {
		t.Fatalf("event stream after the window opened: %s", l)
	}

	// 17:00 Tokyo, the instant it closes: nothing delivered again.
	moveTo(at(3, 17, 0))
	t1.publish(t, "devices/thermo-1/telemetry/temp", "out-2", 1)
	t1.publish(t, "devices/thermo-1/status", "marker-2", 1)
	bob.expectNoMsgBefore(t, "devices/thermo-1/telemetry/temp", "devices/thermo-1/status", "marker-2")
	if !subscribed() {
		t.Error("after the window closed again the subscription was dropped; want it held")
	}

	// The next morning the stream delivers again: its next event is in-3.
	moveTo(at(4, 9, 0))
	t1.publish(t, "devices/thermo-1/telemetry/temp", "in-3", 1)
	if l := st.waitLine(t, "data:"); !strings.Contains(l, "in-3") {
		t.Fatalf("event stream the next morning: %s (out-2 delivered?)", l)
	}
}

// A share's expiry ends the sessions presenting it at that instant, by the
// gateway's clock.
func TestShareExpiresLive(t *testing.T) {
	g := startHTTP(t)
	t0 := time.Now()
	fake := clock.NewFake(t0)
	g.g.SetClock(fake)
	b := shareParties()
	s := share("s-week", "bob", "telemetry", "sub")
	s.Expires = t0.Add(7 * 24 * time.Hour)
	b.Grants = []store.Grant{s}
	g.apply(t, b)
	tok := g.rpt("bob-phone", "bob", perm{"thermo-1/telemetry", "s-week"})
	bob := g.mustConnect(connOpts{clientID: "bob-phone", token: tok})
	if rc := bob.subscribe(t, "devices/thermo-1/telemetry/#"); rc[0] != 1 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	st := g.openStream(t, tok, "devices/thermo-1/telemetry/#")
	fake.Set(s.Expires)
	if code := bob.expectDisconnect(t); code != 0x87 {
		t.Errorf("share expired: DISCONNECT %s, want 0x87", hexCode(code))
	}
	if l := st.waitEnd(t); !strings.Contains(l, "share_revoked") {
		t.Errorf("share expired: end event %s", l)
	}
}
