package coap

import (
	"errors"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is what CoAP needs of the MQTT broker: a publish put into its topic
// space, an inline handler subscribed to a topic (retained messages first)
// and unsubscribed, and a topic's retained messages read. Authorization is this package's, before each call
// and before each delivery: the broker's ACL hook does not see these.
type Broker interface {
	// Inject publishes pk, which device sent, as the broker's own inline
	// client; ErrNotReady when it has none.
	Inject(device string, pk packets.Packet) error
	// Subscribe calls handler with the retained messages of filter, then
	// with each message published to it, until Unsubscribe of the same id.
	Subscribe(filter string, id int, handler mqtt.InlineSubFn) error
	Unsubscribe(filter string, id int) error
	// Retained is the retained messages of topic (a GET without Observe):
	// a read, where Subscribe would run the subscribe hooks.
	Retained(topic string) []packets.Packet
}

// ErrNotReady is Inject's error when the broker has no inline client yet.
var ErrNotReady = errors.New("broker not ready")

// ErrBusy is Inject's error when the message cannot be kept now (the cloud
// bridge's queue is full): 5.03, and the device keeps it.
var ErrBusy = errors.New("gateway queue full")

// Inline is a Broker over mochi's inline client.
type Inline struct{ S *mqtt.Server }

var _ Broker = Inline{}

// NewInline is the Broker of s, whose inline client must be enabled.
func NewInline(s *mqtt.Server) (Inline, error) {
	if s == nil || !s.Options.InlineClient {
		return Inline{}, errors.New("coap: the MQTT server needs its inline client enabled")
	}
	return Inline{S: s}, nil
}

// Inject publishes pk through the inline client (device is not needed).
func (b Inline) Inject(_ string, pk packets.Packet) error {
	// A device whose MQTT client id is mochi's "inline" could take the inline
	// client's place in the registry: publish only through the real one.
	inline, ok := b.S.Clients.Get(mqtt.InlineClientId)
	if !ok || !inline.Net.Inline {
		return ErrNotReady
	}
	// Authorized by the caller: the inline client itself is allowed everything.
	return b.S.InjectPacket(inline, pk)
}

// Subscribe subscribes handler with mochi's inline subscription.
func (b Inline) Subscribe(filter string, id int, handler mqtt.InlineSubFn) error {
	return b.S.Subscribe(filter, id, handler)
}

// Unsubscribe removes an inline subscription.
func (b Inline) Unsubscribe(filter string, id int) error { return b.S.Unsubscribe(filter, id) }

// Retained is mochi's retained messages of topic.
func (b Inline) Retained(topic string) []packets.Packet { return b.S.Topics.Messages(topic) }

// Counters are the gateway's message counters CoAP adds to (the broker's,
// so that metrics count both front ends together); nil ones are kept here.
type Counters struct {
	Denied, Throttled, MessagesOut, BytesOut *atomic.Uint64
}

func (c *Counters) fill() {
	for _, p := range []**atomic.Uint64{&c.Denied, &c.Throttled, &c.MessagesOut, &c.BytesOut} {
		if *p == nil {
			*p = new(atomic.Uint64)
		}
	}
}
