package edge_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp"

	"github.com/edgeid/edgeid/edge/coap"
)

// A spoofer sending one unauthenticated request from each of thousands of
// forged source addresses (4,200 here, past the listener's 4,096) must not
// keep a device's new addresses from being heard: unproven addresses hold
// only part of the table, and the device's requests, which prove
// themselves, are served from every one of its new addresses.
func TestCoAPUDPAddressFloodLeavesRoomForDevices(t *testing.T) {
	g, d := startUDPGateway(t)
	to, err := net.ResolveUDPAddr("udp", g.g.CoAP.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	// Each forged address sends a 4-byte CON GET (answered 4.01) and waits
	// a little for the answer, so that none is lost in the socket's buffer:
	// 8 at a time, every one a distinct loopback address 127.1.x.y. All of
	// it well within the 10 s an unproven address is kept.
	var sent atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for i := w; i < 4200; i += 8 {
				la := &net.UDPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1)), Port: 40000}
				c, err := net.ListenUDP("udp", la)
				if err != nil {
					continue
				}
				if _, err := c.WriteToUDP([]byte{0x40, byte(codes.GET), byte(i >> 8), byte(i)}, to); err == nil {
					_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					if _, _, err := c.ReadFromUDP(buf); err == nil {
						sent.Add(1)
					}
				}
				_ = c.Close()
			}
		}()
	}
	wg.Wait()
	if n := sent.Load(); n < 4000 {
		t.Fatalf("only %d forged addresses were answered", n)
	}
	if out := d.request(t, "post", "/authz-info", d.token, "", ""); strings.Contains(out, "4.") {
		t.Fatalf("authz-info after the flood: %q", out)
	}
	const temp = "/ps/devices/udp-1/telemetry/temp"
	served := 0
	for i := range 5 {
		cc, err := udp.Dial(g.g.CoAP.UDPAddr()) // a new source port each time
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprint(i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := cc.Put(ctx, temp, message.TextPlain, strings.NewReader(body),
			message.Option{ID: coap.OptionProof, Value: []byte(d.proof(t, d.key, codes.PUT, temp, d.token, body, time.Now(), func(r *coap.Request) { cf := message.TextPlain; r.ContentFormat = &cf }))})
		cancel()
		_ = cc.Close()
		if err == nil && resp.Code() == codes.Changed {
			served++
		} else {
			t.Logf("new address %d: %v %v", i, resp, err)
		}
	}
	if served != 5 {
		t.Fatalf("%d of 5 new addresses of the device served after a flood from %d forged ones", served, sent.Load())
	}
	if proven, unproven := g.g.CoAP.UDPAddrs(); unproven > 1024 || proven < 1 {
		t.Fatalf("address table: %d proven, %d unproven; want at most 1024 unproven", proven, unproven)
	}
}
