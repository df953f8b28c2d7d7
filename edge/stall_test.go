package edge_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgeid/edgeid/store"
)

func encode(t *testing.T, pk packets.Packet) []byte {
	t.Helper()
	var b bytes.Buffer
	pk.ProtocolVersion = 5
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readPacketType(t *testing.T, r *bufio.Reader) byte {
	t.Helper()
	h, err := r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	n, mult := 0, 1
	for {
		c, err := r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		n += int(c&127) * mult
		if c&128 == 0 {
			break
		}
		mult *= 128
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		t.Fatal(err)
	}
	return h >> 4
}

// A client that stops reading (full socket buffers, keepalive 0, so no
// deadline) must not hold up revocations: ending its session may not block
// the store, and the next change must apply too.
func TestStalledClientDoesNotBlockRevocations(t *testing.T) {
	g := startGateway(t)
	conn, err := net.Dial("tcp", g.g.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	r := bufio.NewReader(conn)
	tok := g.token("thermo-1", "thermo-1", nil)
	conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 0, ClientIdentifier: "thermo-1",
			PasswordFlag: true, UsernameFlag: true, Username: []byte("thermo-1"), Password: []byte(tok)}}))
	if typ := readPacketType(t, r); typ != packets.Connack {
		t.Fatalf("want CONNACK, got type %d", typ)
	}
	conn.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "devices/thermo-1/status", Qos: 0}}}))
	readPacketType(t, r)
	// Flood our own subscription and never read again.
	pub := encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "devices/thermo-1/status",
		Payload: bytes.Repeat([]byte("A"), 60000)})
	for i := 0; i < 400; i++ {
		_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Write(pub); err != nil {
			break
		}
	}
	done := make(chan error, 2)
	go func() {
		_, err := g.g.Store.Apply(&store.Batch{Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "thermo-1",
			RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}}, nil)
		done <- err
		_, err = g.g.Store.Apply(&store.Batch{Users: []store.User{{ID: "bob", Status: store.UserActive}}}, nil)
		done <- err
	}()
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("store change %d still blocked behind a client that does not read", i+1)
		}
	}
}
