package broker

import (
	"strings"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgeid/edgeid/policy"
)

// aclFixture is a broker with one live session holding a realistic
// thermostat permission set, for the per-message path.
func aclFixture(t testing.TB) (*aclHook, *mqtt.Client, *Session) {
	b := newTestBroker(t)
	rules, err := policy.Expand([]policy.Rule{
		{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish},
		{Filter: "devices/{device}/commands/#", Actions: policy.Subscribe},
		{Filter: "devices/{device}/status", Actions: policy.Publish | policy.Subscribe},
		{Filter: "firmware/thermostat/#", Actions: policy.Subscribe},
		{Filter: "owners/{owner}/alerts", Actions: policy.Publish},
	}, policy.Vars{Device: "thermo-1", Owner: "alice", Client: "thermo-1"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	scope, _ := policy.Compile([]policy.Rule{{Filter: "devices/thermo-1/#", Actions: policy.Publish | policy.Subscribe}, {Filter: "firmware/#", Actions: policy.Subscribe}})
	cl := b.Server.NewClient(nil, "t", "thermo-1", false)
	s := thermoSession(cl, policy.NewPerms(set, scope))
	b.Sessions.add(s)
	return &aclHook{b: b}, cl, s
}

func TestACLCheck(t *testing.T) {
	h, cl, s := aclFixture(t)
	cases := []struct {
		topic string
		write bool
		want  bool
	}{
		{"devices/thermo-1/telemetry/temp", true, true},
		{"devices/thermo-1/telemetry/temp", false, false},
		{"devices/thermo-2/telemetry/temp", true, false},
		{"devices/thermo-1/commands/#", false, true},
		{"devices/thermo-1/commands/set", false, true},
		{"devices/thermo-1/#", false, false},
		{"firmware/thermostat/v2", false, true},
		{"firmware/speaker/v2", false, false}, // scope allows, class does not
		{"owners/alice/alerts", true, false},  // class allows, scope does not
		{"$share/g1/devices/thermo-1/commands/#", false, true},
		{"$share/g1/devices/thermo-1/#", false, false},
		{"$share//devices/thermo-1/commands/#", false, false},
		{"$share/g1", false, false},
	}
	for _, c := range cases {
		if got := h.OnACLCheck(cl, c.topic, c.write); got != c.want {
			t.Errorf("OnACLCheck(%q, write=%v) = %v, want %v", c.topic, c.write, got, c.want)
		}
	}
	// An unknown connection is refused: fail closed.
	other := h.b.Server.NewClient(nil, "t", "thermo-1", false)
	if h.OnACLCheck(other, "devices/thermo-1/telemetry/temp", true) {
		t.Error("a connection without a session was allowed")
	}
	// Past the credential's end, nothing is allowed, before any timer fires.
	s.Expires = time.Now().Add(-time.Millisecond)
	if h.OnACLCheck(cl, "devices/thermo-1/telemetry/temp", true) {
		t.Error("expired session was allowed to publish")
	}
	if h.OnACLCheck(cl, "devices/thermo-1/commands/set", false) {
		t.Error("expired session was allowed a delivery")
	}
}

func TestACLCheckAllocatesNothing(t *testing.T) {
	h, cl, _ := aclFixture(t)
	n := testing.AllocsPerRun(1000, func() {
		h.OnACLCheck(cl, "devices/thermo-1/telemetry/temp", true)
		h.OnACLCheck(cl, "devices/thermo-1/commands/set", false)
	})
	if n != 0 {
		t.Fatalf("OnACLCheck allocates %.1f times per call pair; the per-message path must not allocate", n)
	}
}

// A subscriber to a wildcard gets deliveries on ever-changing topics: the
// memo must not allocate for each (nor make every publisher write it).
func TestACLMemoSettlesOnChangingTopics(t *testing.T) {
	h, cl, _ := aclFixture(t)
	topics := [...]string{"devices/thermo-1/commands/a", "devices/thermo-1/commands/b", "devices/thermo-1/commands/c"}
	i := 0
	n := testing.AllocsPerRun(2000, func() {
		h.OnACLCheck(cl, topics[i%len(topics)], false)
		i++
	})
	// One miss in eight stores a memo (two allocations), and a stored memo
	// is hit by the next check about a third of the time: ~0.17 per check.
	if n >= 1 {
		t.Fatalf("OnACLCheck on changing topics allocates %.1f times per call; a miss must not store a memo each time", n)
	}
}

// The memo keeps its own copy of the topic: mochi's topic points into the
// packet's buffer, which would stay alive with the session, payload and all.
func TestACLMemoDoesNotHoldThePacket(t *testing.T) {
	h, cl, s := aclFixture(t)
	buf := []byte("devices/thermo-1/telemetry/temp" + strings.Repeat("x", 64<<10))
	topic := unsafe.String(&buf[0], len("devices/thermo-1/telemetry/temp"))
	if !h.OnACLCheck(cl, topic, true) {
		t.Fatal("publish refused")
	}
	m := s.memoWrite.Load()
	if m == nil {
		t.Fatal("no memo stored after the first check")
	}
	start, end := uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&buf[len(buf)-1]))
	if p := uintptr(unsafe.Pointer(unsafe.StringData(m.topic))); p >= start && p <= end {
		t.Fatal("the memo's topic points into the packet's buffer: it keeps the whole packet alive")
	}
}

func BenchmarkACLCheck(b *testing.B) {
	h, cl, _ := aclFixture(b)
	b.Run("publish", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.OnACLCheck(cl, "devices/thermo-1/telemetry/temp", true)
		}
	})
	b.Run("delivery", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.OnACLCheck(cl, "devices/thermo-1/commands/set", false)
		}
	})
	b.Run("delivery-changing-topics", func(b *testing.B) {
		topics := [...]string{"devices/thermo-1/commands/a", "devices/thermo-1/commands/b", "devices/thermo-1/commands/c"}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			h.OnACLCheck(cl, topics[i%len(topics)], false)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.OnACLCheck(cl, "devices/thermo-1/telemetry/temp", true)
			}
		})
	})
}

// The per-session memo of the last decision answers only under the
// permissions it was made under: a change of permissions (a class edit, a
// narrowed scope) decides the same topic afresh, in both directions.
func TestACLMemoFollowsPermissions(t *testing.T) {
	h, cl, s := aclFixture(t)
	const cmd, tele = "devices/thermo-1/commands/set", "devices/thermo-1/telemetry/temp"
	for range 2 { // the second round is answered from the memo
		if !h.OnACLCheck(cl, cmd, false) || !h.OnACLCheck(cl, tele, true) {
			t.Fatal("granted topics refused")
		}
	}
	if m := s.memoRead.Load(); m == nil || m.topic != cmd || !m.ok {
		t.Fatalf("delivery decision not kept: %+v", m)
	}
	granted := s.Perms()
	narrow, err := policy.Compile([]policy.Rule{{Filter: "devices/thermo-1/status", Actions: policy.Publish | policy.Subscribe}})
	if err != nil {
		t.Fatal(err)
	}
	s.SetPerms(policy.NewPerms(narrow, nil))
	if h.OnACLCheck(cl, cmd, false) {
		t.Error("delivery allowed under the permissions before the change")
	}
	if h.OnACLCheck(cl, tele, true) {
		t.Error("publish allowed under the permissions before the change")
	}
	s.SetPerms(granted)
	if !h.OnACLCheck(cl, cmd, false) || !h.OnACLCheck(cl, tele, true) {
		t.Error("granted again, still refused")
	}
	// A long topic is decided but not kept.
	long := "devices/thermo-1/telemetry/" + strings.Repeat("x", aclMemoMaxTopic)
	if !h.OnACLCheck(cl, long, true) {
		t.Fatal("long granted topic refused")
	}
	if m := s.memoWrite.Load(); m == nil || m.topic != tele {
		t.Fatalf("memo after a long topic: %+v", m)
	}
}
