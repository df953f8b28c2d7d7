package edge_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	piondtls "github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
)

// The representation of messages crossing between CoAP and MQTT: the
// retained message as a GET's answer and an observation's first
// notification, Content-Format carried as the MQTT 5 content type (both
// ways), and block-wise transfer (RFC 7959) for payloads larger than a block.
func TestCoAPRepresentation(t *testing.T) {
	g := startCoAPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	if rc := svc.subscribe(t, "devices/+/telemetry/#"); rc[0] >= 0x80 {
		t.Fatalf("subscribe: %s", hexCode(rc[0]))
	}
	publish := func(topic, payload, contentType string, retain bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := svc.c.Publish(ctx, &paho.Publish{Topic: topic, Payload: []byte(payload), QoS: 1, Retain: retain,
			Properties: &paho.PublishProperties{ContentType: contentType}})
		if err != nil || r.ReasonCode >= 0x80 {
			t.Fatalf("publish %s: %v %v", topic, r, err)
		}
	}
	next := func() *paho.Publish {
		t.Helper()
		select {
		case m := <-svc.msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message reached the MQTT subscriber")
			return nil
		}
	}
	set := "devices/coap-1/commands/set"

	t.Run("retained message answers GET, with its Content-Format", func(t *testing.T) {
		publish(set, `{"setpoint":22}`, "application/json", true)
		out := g.coap(t, coapID, coapKey, "-v", "7", "-m", "get", g.coapURI(set))
		if !strings.Contains(out, `{"setpoint":22}`) {
			t.Fatalf("GET did not return the retained message: %q", out)
		}
		if !strings.Contains(out, "Content-Format:application/json") && !strings.Contains(out, "Content-Format:50") {
			t.Errorf("the answer lacks Content-Format application/json (50): %q", out)
		}
	})

	t.Run("retained message is the first notification", func(t *testing.T) {
		o := g.observe(t, set, "3")
		o.waitFor(t, `{"setpoint":22}`)
	})

	t.Run("CoAP Content-Format becomes the MQTT content type", func(t *testing.T) {
		g.coap(t, coapID, coapKey, "-m", "put", "-t", "json", "-e", `{"t":21}`, g.coapURI("devices/coap-1/telemetry/temp"))
		m := next()
		if string(m.Payload) != `{"t":21}` || m.Properties == nil || m.Properties.ContentType != "application/json" {
			t.Fatalf("MQTT got %q with properties %+v, want application/json", m.Payload, m.Properties)
		}
	})

	t.Run("block-wise publish is reassembled", func(t *testing.T) {
		big := strings.Repeat("0123456789abcdef", 200) // 3200 bytes: 50 blocks of 64
		f := filepath.Join(t.TempDir(), "big")
		if err := os.WriteFile(f, []byte(big), 0o600); err != nil {
			t.Fatal(err)
		}
		out := g.coap(t, coapID, coapKey, "-b", "64", "-m", "put", "-f", f, g.coapURI("devices/coap-1/telemetry/blob"))
		if strings.Contains(out, "4.") {
			t.Fatalf("block-wise publish refused: %q", out)
		}
		if m := next(); m.Topic != "devices/coap-1/telemetry/blob" || string(m.Payload) != big {
			t.Fatalf("MQTT got %d bytes on %s, want the %d-byte payload whole", len(m.Payload), m.Topic, len(big))
		}
	})

	t.Run("a large retained message is read block-wise", func(t *testing.T) {
		big := strings.Repeat("fedcba9876543210", 300) // 4800 bytes
		publish(set, big, "", true)
		out := g.coap(t, coapID, coapKey, "-b", "256", "-m", "get", g.coapURI(set))
		if !strings.Contains(out, big) {
			t.Fatalf("block-wise GET returned %d bytes, want the %d-byte message whole", len(out), len(big))
		}
	})

	t.Run("a large notification is completed block-wise", func(t *testing.T) {
		publish(set, "small", "", true) // the registration answer stays small
		o := g.observe(t, set, "3")
		o.waitFor(t, "small")
		big := strings.Repeat("notification-", 250) // 3250 bytes
		publish(set, big, "", false)
		o.waitFor(t, big)
	})

	t.Run("blocks out of order are refused, nothing is published", func(t *testing.T) {
		cc, err := dtls.Dial(g.g.CoAP.Addr(), dtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(coapKey), nil }),
			piondtls.WithPSKIdentityHint([]byte(coapID)), piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)),
			options.WithBlockwise(false, blockwise.SZX16, time.Second)) // the test sets Block1 itself
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		put := func(num int64, more bool, body string) codes.Code {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := cc.NewPutRequest(ctx, "/ps/devices/coap-1/telemetry/blob", message.TextPlain, strings.NewReader(body))
			b1, _ := blockwise.EncodeBlockOption(blockwise.SZX16, num, more)
			req.SetOptionUint32(message.Block1, b1)
			resp, err := cc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp.Code()
		}
		if c := put(1, false, "tail-only"); c != codes.RequestEntityIncomplete {
			t.Errorf("a last block without the first: %v, want 4.08", c)
		}
		if c := put(0, true, "0123456789abcdef"); c != codes.Continue {
			t.Fatalf("first block: %v, want 2.31", c)
		}
		if c := put(2, false, "skipped-one"); c != codes.RequestEntityIncomplete {
			t.Errorf("a skipped block: %v, want 4.08", c)
		}
		if c := put(0, true, "short"); c != codes.BadRequest {
			t.Errorf("a short block before the last: %v, want 4.00", c)
		}
		if c := put(0, true, "0123456789abcdef"); c != codes.Continue {
			t.Fatalf("first block: %v, want 2.31", c)
		}
		if c := put(1, false, "end"); c != codes.Changed {
			t.Fatalf("last block: %v, want 2.04", c)
		}
		if m := next(); string(m.Payload) != "0123456789abcdefend" {
			t.Fatalf("MQTT got %q, want the two blocks joined (and nothing of the refused ones)", m.Payload)
		}
	})
}
