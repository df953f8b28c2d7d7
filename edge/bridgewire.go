package edge

import (
	"errors"
	"fmt"
	"path/filepath"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge/bridge"
	"github.com/edgeid/edgeid/edge/coap"
)

// buildBridge opens the cloud bridge's queues when bridge.remotes is set and
// puts it on the publish path of both front ends: MQTT through the broker's
// outbound hook, CoAP through bridgedInline.
func (g *Gateway) buildBridge(server *mqtt.Server) error {
	cfg := g.cfg
	if len(cfg.Bridge.Remotes) == 0 {
		return nil
	}
	dir := cfg.Bridge.Queue.Dir
	if dir == "" {
		dir = filepath.Join(cfg.StateDir, "bridge")
	}
	inline, err := coap.NewInline(server)
	if err != nil {
		return err
	}
	o := bridge.Options{Config: cfg.Bridge, Gateway: cfg.Gateway.ID, Dir: dir, Store: g.Store, Log: g.log,
		Inject: func(pk packets.Packet) error { return inline.Inject("", pk) }, MaxPacketSize: cfg.MQTT.MaxPacketSize}
	if e, err := client.LoadEnrollment(EnrollmentPath(cfg)); err == nil {
		o.EnrolledKey = e.Key
	}
	b, err := bridge.New(o)
	if err != nil {
		return err
	}
	g.Bridge = b
	if err := g.Broker.AddOutbound(b.Wants, b.Out); err != nil {
		return fmt.Errorf("add bridge hook: %w", err)
	}
	return nil
}

// bridgedInline is CoAP's broker: a publish is handed to the bridge (queued
// durably when it goes to the cloud at QoS 1) before it is published locally
// and before the device's 2.04.
type bridgedInline struct {
	coap.Inline
	b *bridge.Bridge
}

func (bi bridgedInline) Inject(device string, pk packets.Packet) error {
	if bi.b != nil && bi.b.Wants(pk.TopicName) {
		if _, err := bi.b.Out(device, &pk); errors.Is(err, bridge.ErrFull) {
			return coap.ErrBusy
		} else if err != nil {
			return err
		}
	}
	return bi.Inline.Inject(device, pk)
}
