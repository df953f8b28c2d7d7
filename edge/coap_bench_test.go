package edge_test

import (
	"context"
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
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			resp, err := cc.Put(ctx, path, message.TextPlain, strings.NewReader("21.5"))
			if err != nil {
				b.Fatal(err)
			}
			if c := resp.Code(); c != codes.Changed && c != codes.Created {
				b.Fatalf("PUT: %v", c)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
	}
	b.Run("libcoap-coap-server", func(b *testing.B) {
		bin, err := exec.LookPath("coap-server-openssl")
		if err != nil {
			b.Skip("coap-server-openssl not installed (Debian libcoap3-bin)")
		}
		ln, _ := net.ListenPacket("udp", "127.0.0.1:0")
		port := ln.LocalAddr().(*net.UDPAddr).Port
		ln.Close()
		srv := exec.Command(bin, "-A", "127.0.0.1", "-p", strconv.Itoa(port-1), "-k", key, "-d", "10", "-v", "0")
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		time.Sleep(300 * time.Millisecond)
		run(b, fmt.Sprintf("127.0.0.1:%d", port), "bench", "/ps/devices/coap-1/telemetry/temp") // DTLS is on port+1
	})
	b.Run("edgeid", func(b *testing.B) {
		g := startGatewayTB(b, func(c *configT) { c.CoAP.DTLSListen = "127.0.0.1:0" })
		g.g.Store.Apply(&store.Batch{Devices: []store.Device{{ID: "coap-1", Class: "thermostat", Owner: "alice",
			Status: store.DeviceActive, PSKIdentity: "bench", PSK: []byte(key)}}}, nil)
		run(b, g.g.CoAP.Addr(), "bench", "/ps/devices/coap-1/telemetry/temp")
	})
}
