package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Outbound is told of each device PUBLISH the ACL and the throttle let
// through, before the device is acknowledged: the cloud bridge queues it
// durably there. A non-nil error refuses the PUBLISH with code (MQTT 5,
// QoS > 0) or drops it unacknowledged (3.1.1, QoS 0), so the device keeps
// a message the gateway could not keep.
type Outbound func(device string, pk *packets.Packet) (packets.Code, error)

// AddOutbound adds fn after every other PUBLISH hook. Publishes of the inline
// client (CoAP, the bridge's own from the cloud) do not pass here: their
// callers hand them on themselves.
func (b *Broker) AddOutbound(wants func(topic string) bool, fn Outbound) error {
	return b.Server.AddHook(&outboundHook{b: b, wants: wants, fn: fn}, nil)
}

type outboundHook struct {
	mqtt.HookBase
	b     *Broker
	wants func(string) bool
	fn    Outbound
}

func (h *outboundHook) ID() string           { return "edgeid-outbound" }
func (h *outboundHook) Provides(x byte) bool { return x == mqtt.OnPublish }

func (h *outboundHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !h.wants(pk.TopicName) {
		return pk, nil
	}
	s := h.b.Sessions.get(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	code, err := h.fn(s.Device, &pk)
	if err == nil {
		return pk, nil
	}
	h.b.Log.Warn("publish refused: the cloud bridge could not queue it", "device", s.Device, "topic", pk.TopicName, "err", err)
	if cl.Properties.ProtocolVersion == 5 && pk.FixedHeader.Qos > 0 {
		return pk, code
	}
	return pk, packets.ErrRejectPacket
}
