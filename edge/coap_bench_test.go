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

	coapdtls "github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/edgeid/edgeid/edge/coap"
)

// CoAP DTLS-PSK publishes per second: confirmable PUTs, one after another,
// from the same go-coap client, to the EdgeID gateway (authenticated by PSK,
// each PUT authorized and published into the MQTT topic space) and to
// libcoap's own coap-server (Debian's libcoap3-bin) storing the PUTs, in the
// same run:
//
//	go test -run '^$' -bench BenchmarkCoAPPublish -benchtime 3000x -count 5 ./edge/
func BenchmarkCoAPPublish(b *testing.B) {
	run := func(b *testing.B, addr string) {
		cc, err := coapdtls.Dial(addr, coapdtls.NewDTLSClientOptions(pskOptions(coapID, coapKey)...))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		benchPuts(b, cc, "/ps/devices/coap-1/telemetry/temp", nil)
	}
	b.Run("libcoap-coap-server", func(b *testing.B) {
		port := libcoapServer(b, -1, "-k", coapKey) // DTLS is on port+1: -p is port-1
		run(b, fmt.Sprintf("127.0.0.1:%d", port))
	})
	b.Run("edgeid", func(b *testing.B) {
		run(b, startCoAPGateway(b).g.CoAP.Addr())
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
		benchPuts(b, cc, udpTemp, opts)
	}
	b.Run("libcoap-coap-server-udp", func(b *testing.B) {
		port := libcoapServer(b, 0)
		putUDP(b, fmt.Sprintf("127.0.0.1:%d", port), nil)
	})
	b.Run("edgeid-udp-proof", func(b *testing.B) {
		g, d := startUDPGateway(b)
		tok := d.token
		cc, err := coapudp.Dial(g.g.CoAP.UDPAddr())
		if err != nil {
			b.Fatal(err)
		}
		if resp, err := cc.Post(context.Background(), coap.PathAuthzInfo, message.TextPlain, strings.NewReader(tok)); err != nil || resp.Code() != codes.Created {
			b.Fatalf("authz-info: %v %v", resp, err)
		}
		cc.Close()
		proofs := make([][]byte, b.N)
		for i := range proofs {
			r := coap.Request{Method: codes.PUT, URI: udpTemp, Token: tok, Body: []byte("21.5")}
			textPlain(&r) // benchPuts sends it
			if proofs[i], err = coap.Prove(d.key, r, time.Now()); err != nil {
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
