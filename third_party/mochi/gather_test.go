// SPDX-License-Identifier: MIT

package mqtt

import (
	"slices"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Gathering a topic's subscribers into maps that already exist allocates
// nothing (EdgeID): upstream copied each matching particle's subscriptions
// into a new map (GetAll) and made a map of subscription identifiers for
// every subscriber, with or without identifiers (Subscription.Merge).
func TestGatherSubscribersAllocatesNothing(t *testing.T) {
	if raceStack > 1 {
		t.Skip("the race detector makes sync.Pool drop what it is given")
	}
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "a/b"})
	x.Subscribe("c2", packets.Subscription{Filter: "a/+", Qos: 1})
	x.Subscribe("c3", packets.Subscription{Filter: "a/#"})
	subs := x.pooledSubscribers("a/b")
	if len(subs.Subscriptions) != 3 {
		t.Fatalf("gathered %d subscribers of a/b, want 3", len(subs.Subscriptions))
	}
	subs.release()
	n := testing.AllocsPerRun(200, func() {
		subs := x.pooledSubscribers("a/b")
		if len(subs.Subscriptions) != 3 {
			t.Fatalf("gathered %d subscribers of a/b, want 3", len(subs.Subscriptions))
		}
		subs.release()
	})
	if n != 0 {
		t.Fatalf("gathering the subscribers of a publish allocates %.1f times", n)
	}
}

// Subscription identifiers survive the lazy map: a subscriber matched by
// filters with identifiers gets exactly those, sorted; one without any gets
// none (EdgeID: upstream sent a list of zeros that the encoder skipped).
func TestMergeKeepsOnlySubscriptionIdentifiers(t *testing.T) {
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "a/#", Identifier: 7})
	x.Subscribe("c1", packets.Subscription{Filter: "a/b"})
	x.Subscribe("c1", packets.Subscription{Filter: "a/+", Identifier: 3})
	x.Subscribe("c2", packets.Subscription{Filter: "a/b"})
	x.Subscribe("c2", packets.Subscription{Filter: "a/#", Qos: 2})
	subs := x.Subscribers("a/b")
	var ids []int
	for _, id := range subs.Subscriptions["c1"].Identifiers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int{3, 7}) {
		t.Fatalf("c1's identifiers %v, want [3 7]", ids)
	}
	if c2 := subs.Subscriptions["c2"]; c2.Identifiers != nil || c2.Qos != 2 {
		t.Fatalf("c2 (no identifiers, QoS 0 and 2): %+v", c2)
	}
	s, _ := newTestServer(t, nil, false)
	cl := s.NewClient(nil, "t", "c1", false)
	cl.Properties.ProtocolVersion = 5
	for name, sub := range subs.Subscriptions {
		out, err := s.publishToClient(cl, sub, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b"})
		if err != nil && err != packets.CodeDisconnect {
			t.Fatal(err)
		}
		want := map[string][]int{"c1": {3, 7}, "c2": nil}[name]
		if !slices.Equal(out.Properties.SubscriptionIdentifier, want) {
			t.Fatalf("delivery to %s: subscription identifiers %v, want %v", name, out.Properties.SubscriptionIdentifier, want)
		}
	}
}

// selectHook keeps the subscribers it is given, as a hook may.
type selectHook struct {
	HookBase
	kept *Subscribers
}

func (h *selectHook) ID() string           { return "select" }
func (h *selectHook) Provides(b byte) bool { return b == OnSelectSubscribers }
func (h *selectHook) OnSelectSubscribers(subs *Subscribers, pk packets.Packet) *Subscribers {
	h.kept = subs
	return subs
}

// What a hook has been given is never given back to the pool: a publish to
// shared subscribers leaves the hook's Subscribers as it was handed over.
func TestSubscribersSeenByAHookAreNotReused(t *testing.T) {
	s, _ := newTestServer(t, nil, false)
	h := &selectHook{}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	s.Topics.Subscribe("c1", packets.Subscription{Filter: "$share/g/a/b", ShareName: []string{"g"}})
	s.Topics.Subscribe("c2", packets.Subscription{Filter: "a/b"})
	s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "a/b"})
	if h.kept == nil {
		t.Fatal("the hook was not asked to select shared subscribers")
	}
	if len(h.kept.Shared) == 0 || len(h.kept.Subscriptions) == 0 {
		t.Fatalf("the hook's subscribers were emptied after the publish (given back to the pool): %+v", h.kept)
	}
	for i := 0; i < 10; i++ { // publishes without shared subscribers take from the pool
		s.publishToSubscribers(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "x/y"})
	}
	if len(h.kept.Shared) == 0 || len(h.kept.Subscriptions) == 0 {
		t.Fatalf("the hook's subscribers were reused by a later publish: %+v", h.kept)
	}
}

// sinkSubscribers keeps the benchmark's result on the heap, as the
// publish path's is.
var sinkSubscribers *Subscribers

// BenchmarkGatherSubscribers: the subscribers of one PUBLISH, as the
// publish path gathers them (pooled) and through the exported Subscribers.
func BenchmarkGatherSubscribers(b *testing.B) {
	x := NewTopicsIndex()
	x.Subscribe("c1", packets.Subscription{Filter: "devices/d1/telemetry/temp"})
	x.Subscribe("c2", packets.Subscription{Filter: "devices/+/telemetry/#"})
	b.Run("pooled", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			x.pooledSubscribers("devices/d1/telemetry/temp").release()
		}
	})
	b.Run("Subscribers", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sinkSubscribers = x.Subscribers("devices/d1/telemetry/temp")
		}
	})
}
