package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/spf13/pflag"
)

// coapJourney is the thermostat of the CoAP story: a battery device with a
// pre-shared key publishes readings over coaps:// and observes its setpoint,
// which the manufacturer's service publishes over MQTT.
func coapJourney(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("coap", pflag.ContinueOnError)
	gw := fs.String("gateway", "127.0.0.1:5684", "gateway coaps:// address")
	identity := fs.String("identity", "", "DTLS PSK identity")
	key := fs.String("key", "", "DTLS pre-shared key")
	publish := fs.String("publish", "", "topic to publish readings to")
	count := fs.Int("count", 3, "readings to publish")
	observe := fs.String("observe", "", "topic to observe (e.g. devices/<id>/commands/setpoint)")
	listen := fs.Duration("listen", 0, "how long to print notifications")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *identity == "" || *key == "" {
		return errUsage
	}
	cc, err := coapdtls.Dial(*gw, coapdtls.NewDTLSClientOptions(
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(*key), nil }),
		piondtls.WithPSKIdentityHint([]byte(*identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
	if err != nil {
		return fmt.Errorf("coaps://%s: %w", *gw, err)
	}
	defer cc.Close()
	fmt.Fprintf(out, "DTLS session open as %s\n", *identity)
	if *observe != "" {
		obs, err := cc.Observe(ctx, "/ps/"+*observe, func(m *pool.Message) {
			body, _ := m.ReadBody()
			fmt.Fprintf(out, "notification %s %s\n", m.Code(), body)
		})
		if err != nil {
			return fmt.Errorf("observe: %w", err)
		}
		defer obs.Cancel(context.Background())
	}
	for i := 0; *publish != "" && i < *count; i++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cc.Put(rctx, "/ps/"+*publish, message.TextPlain, bytes.NewReader([]byte(fmt.Sprintf("%.1f", 19.5+float64(i)/10))))
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "PUT %d %s\n", i+1, resp.Code())
		if resp.Code() != codes.Changed {
			return errRefused{"publish refused"}
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(*listen):
	}
	return nil
}
