// SPDX-License-Identifier: MIT

package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// A new client holds no map for its inflight messages, topic aliases or
// subscriptions until one is written (EdgeID): most idle sessions never
// use them. Written, each works as before, and an inflight store with
// nothing in it clones into one that holds nothing either.
func TestClientMapsAreMadeOnDemand(t *testing.T) {
	s, _ := newTestServer(t, nil, false)
	cl := s.NewClient(nil, "t", "c1", false)
	st := &cl.State
	if st.Inflight.internal != nil || st.Inflight.order != nil || st.Inflight.waiting != nil {
		t.Fatal("a new client's inflight store holds maps")
	}
	if st.TopicAliases.Inbound.internal != nil || st.TopicAliases.Outbound.internal != nil {
		t.Fatal("a new client's topic aliases hold maps")
	}
	if st.Subscriptions.internal != nil {
		t.Fatal("a new client's subscriptions hold a map")
	}
	if c := st.Inflight.Clone(); c.internal != nil || c.Len() != 0 {
		t.Fatal("an empty inflight store's clone holds a map or messages")
	}

	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 7, TopicName: "a/b"}
	if !st.Inflight.Set(pk) {
		t.Fatal("Set on an empty inflight store")
	}
	st.Inflight.SetWaiting(7, true)
	if got, ok := st.Inflight.Get(7); !ok || got.TopicName != "a/b" || !st.Inflight.IsWaiting(7) {
		t.Fatalf("inflight after Set: %+v %v waiting %v", got, ok, st.Inflight.IsWaiting(7))
	}
	if c := st.Inflight.Clone(); c.Len() != 1 || !c.IsWaiting(7) {
		t.Fatal("the clone lost the inflight message or its waiting flag")
	}
	if st.TopicAliases.Inbound.Set(1, "x/y") != "x/y" || st.TopicAliases.Inbound.Set(1, "") != "x/y" {
		t.Fatal("inbound alias not kept")
	}
	if id, existed := st.TopicAliases.Outbound.Set("x/y"); id != 1 || existed {
		t.Fatalf("outbound alias: %d %v", id, existed)
	}
	st.Subscriptions.Add("f/#", packets.Subscription{Filter: "f/#"})
	if _, ok := st.Subscriptions.Get("f/#"); !ok || st.Subscriptions.Len() != 1 {
		t.Fatal("subscription not kept")
	}
}
