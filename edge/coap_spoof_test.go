package edge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/edgeid/edgeid/edge/coap"
)

// Anyone on the path can send a datagram with a device's address and port
// as its source. One that is not CoAP at all (1 to 13 bytes of junk) must
// not end the device's proven plain-UDP session: its observation goes on
// and the next command reaches it.
func TestCoAPUDPJunkFromDeviceAddress(t *testing.T) {
	g, d := startUDPGateway(t)
	svc := g.mustConnect(connOpts{clientID: "acme-cloud", token: g.token("acme-cloud", "acme-cloud", nil)})
	dev, err := newRawUDP(t, g, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const cmd = "/ps/devices/udp-1/commands/set"
	const temp = "/ps/devices/udp-1/telemetry/temp"
	mid := dev.request(message.Confirmable, codes.POST, "tk", []byte(d.token), rawPath("/authz-info")...)
	if m, _, err := dev.await(10*time.Second, answerTo(mid, "tk")); err != nil || m.Code != codes.Created {
		t.Fatalf("authz-info: %v %v", m.Code, err)
	}
	proof := d.proof(t, d.key, codes.GET, cmd, d.token, "", time.Now(), observing)
	mid = dev.request(message.Confirmable, codes.GET, "obs1", nil, append(rawPath(cmd), rawOpt(message.Observe, ""), rawOpt(coap.OptionProof, proof))...)
	if m, _, err := dev.await(10*time.Second, answerTo(mid, "obs1")); err != nil || m.Code != codes.Content {
		t.Fatalf("observe: %v %v", m.Code, err)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations, want 1", n)
	}
	put := func(body string) {
		t.Helper()
		tok := "p" + body[:3]
		proof := d.proof(t, d.key, codes.PUT, temp, d.token, body, time.Now())
		mid := dev.request(message.Confirmable, codes.PUT, tok, []byte(body), append(rawPath(temp), rawOpt(coap.OptionProof, proof))...)
		if m, _, err := dev.await(10*time.Second, answerTo(mid, tok)); err != nil || m.Code != codes.Changed {
			t.Fatalf("proven PUT %q: %v %v", body, m.Code, err)
		}
	}
	put("before")
	for n := 1; n <= 13; n++ {
		dev.send([]byte(strings.Repeat("\xff", n))) // version 3: not CoAP
	}
	// The listener reads datagrams in order: once this is answered, the
	// junk has been read.
	put("after")
	if n := g.g.CoAP.Sessions("udp-1"); n != 1 {
		t.Errorf("%d sessions of udp-1 after the junk, want the 1 it had", n)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 1 {
		t.Fatalf("%d observations after the junk, want the 1 it had", n)
	}
	if rc := svc.publish(t, "devices/udp-1/commands/set", "after-junk", 1); rc >= 0x80 {
		t.Fatalf("publish: %s", hexCode(rc))
	}
	m, _, err := dev.await(10*time.Second, func(m message.Message) bool { return string(m.Token) == "obs1" })
	if err != nil || m.Code != codes.Content || string(m.Payload) != "after-junk" {
		t.Fatalf("notification after the junk: %v %q %v", m.Code, m.Payload, err)
	}
	// Junk again and a command straight after, with no request between
	// them: the notification still arrives.
	dev.send([]byte{0x40})
	svc.publish(t, "devices/udp-1/commands/set", "right-after", 1)
	m, _, err = dev.await(10*time.Second, func(m message.Message) bool { return string(m.Token) == "obs1" && string(m.Payload) == "right-after" })
	if err != nil || m.Code != codes.Content {
		t.Fatalf("notification right after junk: %v %v", m.Code, err)
	}
}
