package bridge

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/policy"
)

// fakeCloud is a hostile MQTT 5 broker: it takes the CONNECT, answers a
// CONNACK with a small Maximum Packet Size and never acknowledges a PUBLISH.
func fakeCloud(t *testing.T, got chan<- packets.Packet) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				_, _ = readPacket(br, 5, 1<<20) // the CONNECT (readPacket, a client's reader, calls it unexpected)
				ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: 5}
				ack.Properties.MaximumPacketSize = 512
				var b bytes.Buffer
				_ = ack.ConnackEncode(&b)
				_, _ = c.Write(b.Bytes())
				for {
					pk, err := readPacket(br, 5, 1<<20)
					if err != nil && !strings.Contains(err.Error(), "unexpected packet type") {
						return
					}
					if pk.FixedHeader.Type == packets.Publish {
						got <- pk
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// A record skipped (here: larger than the cloud takes) while an earlier one
// waits for its PUBACK is acknowledged in turn, later: it used to index the
// in-flight list at -1 and crash the gateway.
func TestSkippedRecordBehindInflight(t *testing.T) {
	got := make(chan packets.Packet, 10)
	addr := fakeCloud(t, got)
	rc := config.Remote{Name: "cloud", Address: "mqtt://" + addr, Protocol: "5", ClientID: "gw", KeepAlive: time.Minute,
		Rules: []config.BridgeRule{{Filter: "t/#", Direction: "out", QoS: 1, RemotePrefix: "g/"}}}
	r, err := newRemote(rc, config.Bridge{}.WithDefaults("gw").Queue, Options{Dir: t.TempDir(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := policy.Compile([]policy.Rule{{Filter: "#", Actions: policy.Subscribe}})
	p := policy.NewPerms(set)
	r.perms.Store(&p)
	if _, err := r.spool.Append(Message{Topic: "t/small", Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.spool.Append(Message{Topic: "t/big", Payload: bytes.Repeat([]byte("y"), 4096), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.spool.Append(Message{Topic: "t/after", Payload: []byte("z"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	for _, want := range []string{"g/t/small", "g/t/after"} {
		select {
		case pk := <-got:
			if pk.TopicName != want {
				t.Fatalf("the cloud got %s, want %s", pk.TopicName, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the cloud never got %s", want)
		}
	}
	cancel()
	<-done
	_ = r.spool.Close()
	if a := r.spool.Acked(); a != 0 {
		t.Errorf("acked %d: nothing is acknowledged while the first record waits for its PUBACK", a)
	}
}
