package coap

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
)

func TestReplayGuard(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	g := &replayGuard{perDevice: 3, total: 5}
	if err := g.use("a", "1", t0); err != nil {
		t.Fatal(err)
	}
	// A proof is good for ±ProofWindow around its iat: its id must be
	// remembered for all of that, across a generation change.
	for _, at := range []time.Duration{0, ProofWindow, 2*ProofWindow + time.Second, 2 * ProofWindow * 2} {
		if err := g.use("a", "1", t0.Add(at)); err == nil {
			t.Fatalf("id reused after %s was taken", at)
		}
	}
	// The same id from another device is another proof.
	if err := g.use("b", "1", t0); err != nil {
		t.Fatal(err)
	}
	// A device's share, then the total, are refused, never evicted.
	g = &replayGuard{perDevice: 3, total: 5}
	for i := range 3 {
		if err := g.use("a", fmt.Sprint(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.use("a", "x", t0); err == nil {
		t.Fatal("a device's fourth proof in a generation of 3 was taken")
	}
	for i := range 2 {
		if err := g.use("b", fmt.Sprint(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.use("c", "0", t0); err == nil {
		t.Fatal("a proof beyond the total was taken")
	}
	// Old generations go: after two windows of 2×ProofWindow the ids are gone
	// and the shares are free again.
	later := t0.Add(4*ProofWindow + 2*time.Second)
	g.use("z", "rotate", later.Add(-2*ProofWindow))
	if err := g.use("a", "x", later); err != nil {
		t.Fatalf("a device's share after its ids aged out: %v", err)
	}
}

// A spoofer sending one unauthenticated request from each of thousands of
// forged source addresses (4,200 here, past the listener's 4,096) must not
// keep a device's new addresses from being heard: unproven addresses hold
// only part of the table, and the device's requests, which prove
// themselves, are served from every one of its new addresses.
func TestCoAPUDPAddressFloodLeavesRoomForDevices(t *testing.T) {
	ts := startTestServer(t, 0, Options{UDPListen: "127.0.0.1:0"})
	d := ts.addKeyDevice(t, "udp-1")
	to, err := net.ResolveUDPAddr("udp", ts.UDPAddr())
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
	ts.authorize(t, d)
	const temp = "/ps/devices/udp-1/telemetry/temp"
	cf := message.TextPlain
	served := 0
	for i := range 5 {
		cc, err := udp.Dial(ts.UDPAddr()) // a new source port each time
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprint(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cc.Put(ctx, temp, message.TextPlain, strings.NewReader(body),
			d.proofOption(t, Request{Method: codes.PUT, URI: temp, Body: []byte(body), ContentFormat: &cf}))
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
	if proven, unproven := ts.UDPAddrs(); unproven > 1024 || proven < 1 {
		t.Fatalf("address table: %d proven, %d unproven; want at most 1024 unproven", proven, unproven)
	}
}
