package edge_test

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// rawUDP is a CoAP endpoint on a plain UDP socket, for what a CoAP library
// will not send: exact datagrams, junk from a device's own address and port,
// options of invalid length.
type rawUDP struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
	mid  atomic.Uint32
}

// newRawUDP opens a socket on laddr ("127.0.0.1:0" for any port) towards
// the gateway's plain-UDP listener.
func newRawUDP(t *testing.T, g *gw, laddr string) (*rawUDP, error) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", g.g.CoAP.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	la, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, err
	}
	r := &rawUDP{t: t, conn: c, to: to}
	r.mid.Store(0x1000)
	t.Cleanup(func() { _ = c.Close() })
	return r, nil
}

// rawOpt is one option; request sorts them.
func rawOpt(id message.OptionID, v string) message.Option {
	return message.Option{ID: id, Value: []byte(v)}
}

// rawPath is the Uri-Path options of path.
func rawPath(path string) []message.Option {
	var out []message.Option
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		out = append(out, rawOpt(message.URIPath, seg))
	}
	return out
}

// rawEncode is the datagram of a message, its options in order.
func rawEncode(t *testing.T, typ message.Type, code codes.Code, mid uint16, token string, payload []byte, opts ...message.Option) []byte {
	t.Helper()
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	m := message.Message{Type: typ, Code: code, MessageID: int32(mid), Options: opts, Payload: payload}
	if token != "" {
		m.Token = []byte(token)
	}
	buf := make([]byte, 64*1024)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf[:n]
}

// send writes a datagram as it is.
func (r *rawUDP) send(b []byte) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDP(b, r.to); err != nil {
		r.t.Fatal(err)
	}
}

// request sends a request (CON unless typ says otherwise) and returns its
// message id.
func (r *rawUDP) request(typ message.Type, code codes.Code, token string, payload []byte, opts ...message.Option) uint16 {
	r.t.Helper()
	mid := uint16(r.mid.Add(1))
	r.send(rawEncode(r.t, typ, code, mid, token, payload, opts...))
	return mid
}

// next is the next datagram from the gateway, decoded, with its size; an
// error when none comes within wait (a bound, not an expectation).
func (r *rawUDP) next(wait time.Duration) (message.Message, int, error) {
	buf := make([]byte, 64*1024)
	_ = r.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := r.conn.ReadFromUDP(buf)
	if err != nil {
		return message.Message{}, 0, err
	}
	m := message.Message{Options: make(message.Options, 0, 32)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
		return message.Message{}, n, err
	}
	return m, n, nil
}

// await reads until a datagram for which match is true, acknowledging
// confirmable ones (notifications); an error if none comes within wait.
func (r *rawUDP) await(wait time.Duration, match func(message.Message) bool) (message.Message, int, error) {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return message.Message{}, 0, errors.New("no matching datagram")
		}
		m, n, err := r.next(left)
		if err != nil {
			return m, n, err
		}
		if m.Type == message.Confirmable {
			r.send(rawEncode(r.t, message.Acknowledgement, codes.Empty, uint16(m.MessageID), "", nil))
		}
		if match(m) {
			return m, n, nil
		}
	}
}

// answerTo matches the response to the request with message id mid (a
// piggybacked ACK) or token (a separate or NON response).
func answerTo(mid uint16, token string) func(message.Message) bool {
	return func(m message.Message) bool {
		if m.Code == codes.Empty {
			return false
		}
		return (m.Type == message.Acknowledgement && uint16(m.MessageID) == mid) || (token != "" && string(m.Token) == token)
	}
}

// rawDecode decodes a datagram (m needs room for its options).
func rawDecode(b []byte, m *message.Message) (int, error) { return coder.DefaultCoder.Decode(b, m) }
