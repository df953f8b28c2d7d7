package edge

import (
	"errors"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/dpop"
	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/httpapi"
)

// buildHTTP builds the HTTPS front end when http.listen is set: the same
// authenticator, throttle, gate and counters as MQTT and CoAP, publishes
// through the bridge-aware inline broker.
func (g *Gateway) buildHTTP(server *mqtt.Server) error {
	cfg := g.cfg
	if cfg.HTTP.Listen == "" {
		return nil
	}
	cert, err := g.serverCert()
	if err != nil {
		return err
	}
	inline, err := coap.NewInline(server)
	if err != nil {
		return err
	}
	b := g.Broker
	g.HTTP, err = httpapi.New(httpapi.Options{Config: cfg.HTTP, Certificate: &cert, Auth: g.Auth,
		DPoP:   dpop.NewVerifier(dpop.Options{MaxAge: cfg.HTTP.DPoPMaxAge, Skew: cfg.Auth.ClockSkew, Nonce: cfg.HTTP.DPoPNonce}),
		Broker: httpBroker{bridgedInline{inline, g.Bridge}}, Throttle: b.Throttle, Gate: g.gate,
		MaxPacketSize: int(cfg.MQTT.MaxPacketSize), Log: g.log.With("component", "https"), Now: b.Now, UMA: g.uma,
		Counters: httpapi.Counters{Denied: &b.Counters.Denied, Throttled: &b.Counters.Throttled, MessagesIn: &b.Counters.MessagesIn,
			MessagesOut: &b.Counters.MessagesOut, BytesOut: &b.Counters.BytesOut}})
	return err
}

// httpBroker is the HTTP front end's broker: bridgedInline, with a full
// bridge queue said the way package httpapi knows it.
type httpBroker struct{ bridgedInline }

func (h httpBroker) Inject(device string, pk packets.Packet) error {
	if err := h.bridgedInline.Inject(device, pk); errors.Is(err, coap.ErrBusy) {
		return httpapi.ErrBusy
	} else {
		return err
	}
}
