package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/device"
)

// coapJourney is the thermostat of the CoAP story: a battery device
// publishes readings and observes its setpoint, which the manufacturer's
// service publishes over MQTT. Over coaps:// it holds a pre-shared key; over
// plain coap:// (--udp) a token bound to its own key, whose possession it
// proves on every request.
func coapJourney(ctx context.Context, args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("coap", pflag.ContinueOnError)
	gw := fs.String("gateway", "", "gateway address (default 127.0.0.1:5684, or :5683 with --udp)")
	identity := fs.String("identity", "", "DTLS PSK identity")
	key := fs.String("key", "", "DTLS pre-shared key")
	udp := fs.Bool("udp", false, "plain coap:// with a key-bound token and a proof per request, instead of DTLS")
	tokenFlag := fs.String("token", "", "--udp: the access token bound to the device key (or @file)")
	keyPath := fs.String("device-key", "device.jwk", "--udp: the device's private key (from edgeid-sensor keygen)")
	publish := fs.String("publish", "", "topic to publish readings to")
	count := fs.Int("count", 3, "readings to publish")
	observe := fs.String("observe", "", "topic to observe (e.g. devices/<id>/commands/setpoint)")
	listen := fs.Duration("listen", 0, "how long to print notifications")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cc *udpClient.Conn
	var sign func(method codes.Code, path string, body []byte) []message.Option
	var err error
	if *udp {
		if cc, sign, err = dialUDP(ctx, *gw, *tokenFlag, *keyPath, out); err != nil {
			return err
		}
	} else {
		if *identity == "" || *key == "" {
			return errUsage
		}
		addr := *gw
		if addr == "" {
			addr = "127.0.0.1:5684"
		}
		cc, err = coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(*key), nil }),
			piondtls.WithPSKIdentityHint([]byte(*identity)),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
		if err != nil {
			return fmt.Errorf("coaps://%s: %w", addr, err)
		}
		sign = func(codes.Code, string, []byte) []message.Option { return nil }
		fmt.Fprintf(out, "DTLS session open as %s\n", *identity)
	}
	defer cc.Close()
	if *observe != "" {
		path := "/ps/" + *observe
		obs, err := cc.Observe(ctx, path, func(m *pool.Message) {
			body, _ := m.ReadBody()
			fmt.Fprintf(out, "notification %s %s\n", m.Code(), body)
		}, sign(codes.GET, path, nil)...)
		if err != nil {
			return fmt.Errorf("observe: %w", err)
		}
		defer func() { _ = obs.Cancel(context.Background(), sign(codes.GET, path, nil)...) }()
	}
	for i := 0; *publish != "" && i < *count; i++ {
		path := "/ps/" + *publish
		body := []byte(fmt.Sprintf("%.1f", 19.5+float64(i)/10))
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cc.Put(rctx, path, message.TextPlain, bytes.NewReader(body), sign(codes.PUT, path, body)...)
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "PUT %d %s\n", i+1, resp.Code())
		if resp.Code() != codes.Changed {
			msg, _ := resp.ReadBody()
			return errRefused{fmt.Sprintf("publish refused: %s %s", resp.Code(), msg)}
		}
	}
	select {
	case <-ctx.Done():
	case <-time.After(*listen):
	}
	return nil
}

// dialUDP opens plain coap:// to the gateway, posts the token to
// /authz-info (it is then named by its digest, so requests stay small) and
// returns a signer that adds a fresh proof of possession to each request.
func dialUDP(ctx context.Context, gw, tokenFlag, keyPath string, out io.Writer) (*udpClient.Conn, func(codes.Code, string, []byte) []message.Option, error) {
	if tokenFlag == "" {
		return nil, nil, errUsage
	}
	token := tokenFlag
	if name, ok := strings.CutPrefix(tokenFlag, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, nil, err
		}
		token = strings.TrimSpace(string(b))
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	key, err := jwk.ParseKey(kb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if gw == "" {
		gw = "127.0.0.1:5683"
	}
	cc, err := coapudp.Dial(gw)
	if err != nil {
		return nil, nil, fmt.Errorf("coap://%s: %w", gw, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cc.Post(rctx, device.PathAuthzInfo, message.TextPlain, strings.NewReader(token))
	if err == nil && resp.Code() != codes.Created {
		msg, _ := resp.ReadBody()
		err = errRefused{fmt.Sprintf("token refused: %s %s", resp.Code(), msg)}
	}
	if err != nil {
		cc.Close()
		return nil, nil, fmt.Errorf("post token to %s: %w", device.PathAuthzInfo, err)
	}
	fmt.Fprintf(out, "token posted to coap://%s%s\n", gw, device.PathAuthzInfo)
	var observeValue uint32
	sign := func(method codes.Code, path string, body []byte) []message.Option {
		r := device.Request{Method: method, URI: path, Token: token, Body: body}
		switch method {
		case codes.PUT: // go-coap's Put sends the Content-Format given
			cf := message.TextPlain
			r.ContentFormat = &cf
		case codes.GET: // only Observe registrations (0) and cancellations (1) are signed here
			v := observeValue
			r.Observe = &v
			observeValue = 1 // the next GET this journey signs is the cancellation
		}
		proof, err := device.ProveCoAP(key, r, time.Now())
		if err != nil {
			return nil // the gateway answers 4.01, which is reported
		}
		return []message.Option{{ID: device.OptionProof, Value: proof}}
	}
	return cc, sign, nil
}
