// SPDX-License-Identifier: MIT

package mqtt

// EdgeID: a reconnect with the client id of a connection that is closing
// keeps its registration and its subscriptions.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// unsubscribedHook calls during, once, from the first OnUnsubscribed of a
// client with id: the moment a closing connection is ending its session.
type unsubscribedHook struct {
	HookBase
	id     string
	once   atomic.Bool
	during func()
}

func (h *unsubscribedHook) ID() string           { return "unsubscribed" }
func (h *unsubscribedHook) Provides(b byte) bool { return b == OnUnsubscribed }
func (h *unsubscribedHook) OnUnsubscribed(cl *Client, pk packets.Packet) {
	if cl.ID == h.id && h.once.CompareAndSwap(false, true) {
		h.during()
	}
}

// dialSubscribe connects a clean MQTT 3.1.1 session id and subscribes it
// to filter at QoS 0, returning once the SUBACK has arrived.
func dialSubscribe(addr, id, filter string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id}}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: filter}}}
	if err := connect.ConnectEncode(&buf); err != nil {
		return nil, err
	}
	if err := sub.SubscribeEncode(&buf); err != nil {
		return nil, err
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	want := []byte{packets.Connack << 4, 2, 0, 0, packets.Suback << 4, 3, 0, 1, 0}
	got := make([]byte, len(want))
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		c.Close()
		return nil, fmt.Errorf("connect and subscribe %s: got % x, %v", id, got, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// A connection that ends its session (clean, DISCONNECT) while a reconnect
// of its client id takes over must not take the reconnect's registration
// and subscriptions with it: upstream checked "taken over" and then deleted
// by client id, so a reconnect landing in between was unregistered, and
// every message to it was dropped though its SUBACK had granted the filter.
// The hook holds the old connection in that window until the reconnect has
// its SUBACK (or a second has passed: with the fix, the reconnect waits for
// the old session to end first).
func TestReconnectDuringSessionEndKeepsSubscription(t *testing.T) {
	s, _ := newTestServer(t, nil, false)
	h := &unsubscribedHook{id: "dup"}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   net.Conn
		err error
	}
	reconnected := make(chan result, 1)
	h.during = func() {
		go func() {
			c, err := dialSubscribe(l.Address(), "dup", "t/#")
			reconnected <- result{c, err}
		}()
		select {
		case r := <-reconnected:
			reconnected <- r
		case <-time.After(time.Second):
		}
	}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	old, err := dialSubscribe(l.Address(), "dup", "t/#")
	if err != nil {
		t.Fatal(err)
	}
	oldCl, ok := s.Clients.Get("dup")
	if !ok {
		t.Fatal("the first connection is not registered")
	}
	if _, err := old.Write([]byte{packets.Disconnect << 4, 0}); err != nil {
		t.Fatal(err)
	}
	r := <-reconnected
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	old.Close()
	waitFor(t, "the first connection's end", func() bool { return goroutinesIn("detachClient") == 0 })

	cur, ok := s.Clients.Get("dup")
	if !ok || cur == oldCl {
		t.Fatalf("the reconnect is not registered (registered: %v, the old connection: %v)", ok, cur == oldCl)
	}
	if subs := s.Topics.Subscribers("t/x"); len(subs.Subscriptions) != 1 {
		t.Fatalf("subscribers of t/x: %v, want the reconnect", subs.Subscriptions)
	}

	// And a message published to the filter reaches it.
	pub, err := dialSubscribe(l.Address(), "pub", "other")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var buf bytes.Buffer
	msg := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: 4, TopicName: "t/x", Payload: []byte("hi")}
	if err := msg.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()
	got := make([]byte, len(want))
	_ = r.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(r.c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the reconnect got % x, %v; want % x", got, err, want)
	}
}

// keptHook reports, when a session is established (on the goroutine that
// read its CONNECT), how many bytes of its last packet the client keeps.
type keptHook struct {
	HookBase
	kept chan int
}

func (h *keptHook) ID() string           { return "kept" }
func (h *keptHook) Provides(b byte) bool { return b == OnSessionEstablished }
func (h *keptHook) OnSessionEstablished(cl *Client, pk packets.Packet) {
	h.kept <- len(cl.Net.lastRaw)
}

// An established session keeps nothing of its CONNECT's bytes (a token is
// in them): the read loop forgets each packet it has handled, but the
// CONNECT is read before the loop.
func TestSessionKeepsNoConnectBytes(t *testing.T) {
	s, _ := newTestServer(t, nil, false)
	h := &keptHook{kept: make(chan int, 1)}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var buf bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Properties: packets.Properties{AuthenticationMethod: "ace", AuthenticationData: []byte("a-token-of-some-length")},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "keeps-nothing"}}
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if kept := <-h.kept; kept != 0 {
		t.Fatalf("the session keeps the %d bytes of its CONNECT", kept)
	}
}
