package edge_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	piondtls "github.com/pion/dtls/v3"
	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/coap"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// CoAP DTLS-PSK publishes per second: confirmable PUTs, one after another,
// from the same go-coap client, to the EdgeID gateway (authenticated by PSK,
// each PUT authorized and published into the MQTT topic space) and to
// libcoap's own coap-server (Debian's libcoap3-bin) storing the PUTs, in the
// same run:
//
//	go test -run '^$' -bench BenchmarkCoAPPublish -benchtime 3000x -count 5 ./edge/
func BenchmarkCoAPPublish(b *testing.B) {
	const key = "bench-psk-0123456789abcdef"
	run := func(b *testing.B, addr, identity, path string) {
		cc, err := coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(
			piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
			piondtls.WithPSKIdentityHint([]byte(identity)),
			piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8)))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		benchPuts(b, cc, path, nil)
	}
	b.Run("libcoap-coap-server", func(b *testing.B) {
		port := libcoapServer(b, -1, "-k", key) // DTLS is on port+1: -p is port-1
		run(b, fmt.Sprintf("127.0.0.1:%d", port), "bench", "/ps/devices/coap-1/telemetry/temp")
	})
	b.Run("edgeid", func(b *testing.B) {
		g := startGatewayTB(b, func(c *configT) { c.CoAP.DTLSListen = "127.0.0.1:0" })
		g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "coap-1", Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, PSKIdentity: "bench", PSK: []byte(key)}}}, nil)
		run(b, g.g.CoAP.Addr(), "bench", "/ps/devices/coap-1/telemetry/temp")
	})

	// Plain UDP: libcoap's coap-server with no security at all, and EdgeID
	// checking a proof of possession (an ES256 JWS verify, the token's
	// checks, a replay check) on every PUT. The proofs are signed before the
	// timer starts, so only the server's work is measured.
	putUDP := func(b *testing.B, addr string, opts func(i int) []message.Option) {
		cc, err := coapudp.Dial(addr)
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		benchPuts(b, cc, "/ps/devices/udp-1/telemetry/temp", opts)
	}
	b.Run("libcoap-coap-server-udp", func(b *testing.B) {
		port := libcoapServer(b, 0)
		putUDP(b, fmt.Sprintf("127.0.0.1:%d", port), nil)
	})
	b.Run("edgeid-udp-proof", func(b *testing.B) {
		g := startGatewayTB(b, func(c *configT) { c.CoAP.UDPListen = "127.0.0.1:0" })
		iss, _ := demo.NewIssuer("udp-1", "udp-1-key")
		pub, _ := iss.Key.PublicKey()
		pubJSON, _ := json.Marshal(pub)
		g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "udp-1", Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, PublicKey: pubJSON}}}, nil)
		thumb, _ := pub.Thumbprint(crypto.SHA256)
		tok := g.token("udp-1", "alice", func(c map[string]any) {
			c["cnf"] = map[string]any{"jkt": base64.RawURLEncoding.EncodeToString(thumb)}
		})
		cc, err := coapudp.Dial(g.g.CoAP.UDPAddr())
		if err != nil {
			b.Fatal(err)
		}
		if resp, err := cc.Post(context.Background(), coap.PathAuthzInfo, message.TextPlain, strings.NewReader(tok)); err != nil || resp.Code() != codes.Created {
			b.Fatalf("authz-info: %v %v", resp, err)
		}
		cc.Close()
		textPlain := message.TextPlain // benchPuts sends it
		proofs := make([][]byte, b.N)
		for i := range proofs {
			if proofs[i], err = coap.Prove(iss.Key, coap.Request{Method: codes.PUT, URI: "/ps/devices/udp-1/telemetry/temp", Token: tok,
				Body: []byte("21.5"), ContentFormat: &textPlain}, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
		putUDP(b, g.g.CoAP.UDPAddr(), func(i int) []message.Option {
			return []message.Option{{ID: coap.OptionProof, Value: proofs[i]}}
		})
	})
}

// libcoapServer starts libcoap's coap-server on a free UDP port (its -p is
// that port plus offset) with extra flags, for the benchmark's lifetime.
func libcoapServer(b *testing.B, offset int, extra ...string) int {
	bin, err := exec.LookPath("coap-server-openssl")
	if err != nil {
		b.Skip("coap-server-openssl not installed (Debian libcoap3-bin)")
	}
	ln, _ := net.ListenPacket("udp", "127.0.0.1:0")
	port := ln.LocalAddr().(*net.UDPAddr).Port
	ln.Close()
	srv := exec.Command(bin, append([]string{"-A", "127.0.0.1", "-p", strconv.Itoa(port + offset), "-d", "10", "-v", "0"}, extra...)...)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	time.Sleep(300 * time.Millisecond)
	return port
}

// benchPuts sends b.N confirmable PUTs one after another on cc, each with
// opts(i) when set, and reports them per second.
func benchPuts(b *testing.B, cc *udpClient.Conn, path string, opts func(i int) []message.Option) {
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var o []message.Option
		if opts != nil {
			o = opts(i)
		}
		resp, err := cc.Put(ctx, path, message.TextPlain, strings.NewReader("21.5"), o...)
		if err != nil {
			b.Fatal(err)
		}
		if c := resp.Code(); c != codes.Changed && c != codes.Created {
			b.Fatalf("PUT: %v", c)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
}
