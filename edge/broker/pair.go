package broker

import (
	"context"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The pairing relay over MQTT, for devices that cannot speak HTTPS: a device
// publishes a pairing step on $edgeid/pair/<its id>/request and receives the
// authority's answer on $edgeid/pair/<its id>/response. Only the device
// itself may use its two topics, whatever its class grants; the request is
// answered by the gateway and never routed to other clients.

const pairPrefix = "$edgeid/pair/"

// pairTopicAllowed decides the relay topics: mine is false for any other topic.
func pairTopicAllowed(topic, device string, write bool) (ok, mine bool) {
	if !strings.HasPrefix(topic, pairPrefix) {
		return false, false
	}
	rest := topic[len(pairPrefix):]
	if write {
		return rest == device+"/request", true
	}
	return rest == device+"/response", true
}

type pairHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *pairHook) ID() string { return "edgeid-pair" }

func (h *pairHook) Provides(x byte) bool { return x == mqtt.OnPublish }

// OnPublish takes the device's pairing request off the message path and
// answers it from a goroutine (the authority is a network call away).
func (h *pairHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if b.PairRelay == nil || cl.Net.Inline || !strings.HasPrefix(pk.TopicName, pairPrefix) {
		return pk, nil
	}
	s := b.Sessions.get(cl)
	if s == nil || pk.TopicName != pairPrefix+s.Device+"/request" {
		return pk, packets.ErrRejectPacket
	}
	req := append([]byte(nil), pk.Payload...)
	device := s.Device
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		answer := b.PairRelay(ctx, device, req)
		// Written to this connection only: the answer is for nobody else,
		// so it never goes through the topic tree.
		if cl.Closed() {
			return
		}
		if err := cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish},
			TopicName: pairPrefix + device + "/response", Payload: answer}); err != nil {
			b.Log.Warn("pairing relay: answer not delivered", "device", device, "err", err)
		}
	}()
	// Acknowledged (PUBACK for QoS 1), never routed or retained.
	return pk, packets.CodeSuccessIgnore
}
