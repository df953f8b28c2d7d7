package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// The bench generators (pubsub, idle) speak MQTT 5 over bare TCP: the
// handshake (CONNECT, CONNACK, SUBSCRIBE, SUBACK) with paho.golang's packet
// codec, then PUBLISH and PUBACK bytes written and read directly, so that
// the generator, on the same cores as the broker, takes as little of them as
// it can. Nothing here is the broker's own code: the same client measures
// every broker, before and after a broker patch.

// creds is what a client presents in CONNECT: a token (authentication
// method "ace", the token as Authentication Data), or a username and
// password, or nothing.
type creds struct {
	token              string
	username, password string
}

// credsFor builds one client's credentials: its token from tokens if given,
// else username and password with "{id}" replaced by the client id.
func credsFor(id string, tokens map[string]string, username, password string) (creds, error) {
	if tokens != nil {
		tok, ok := tokens[id]
		if !ok {
			return creds{}, fmt.Errorf("--tokens: no token for client %s", id)
		}
		return creds{token: tok}, nil
	}
	return creds{username: strings.ReplaceAll(username, "{id}", id), password: strings.ReplaceAll(password, "{id}", id)}, nil
}

// errConnack is a CONNACK (or SUBACK) refusal.
type errConnack struct {
	what string
	code byte
}

func (e errConnack) Error() string { return fmt.Sprintf("%s refused: 0x%02x", e.what, e.code) }

// rawConn is one client connection after CONNACK.
type rawConn struct {
	net.Conn
	r *bufio.Reader
	// recvMax is the broker's Receive Maximum (QoS 1 PUBLISHes this client
	// may have unacknowledged), 65535 when CONNACK does not say.
	recvMax int
}

// sourceIP is the i-th of n loopback source addresses (127.1.0.1,
// 127.1.0.2, ..., 254 per /24), or nil for the system's choice when n is 0:
// a gateway limits connects per source address, as a home network of many
// devices does not meet.
func sourceIP(i, n int) net.IP {
	if n <= 0 {
		return nil
	}
	j := i % n
	return net.IPv4(127, 1, byte(j/254), byte(j%254+1))
}

// dialRaw connects (over TLS with tlsConf, else plain TCP) and completes
// CONNECT/CONNACK within timeout.
func dialRaw(ctx context.Context, addr string, src net.IP, clientID string, cr creds, keepAlive uint16, timeout time.Duration, tlsConf *tls.Config) (*rawConn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := net.Dialer{}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tc := tls.Client(c, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	cp := packets.NewControlPacket(packets.CONNECT)
	cc := cp.Content.(*packets.Connect)
	cc.ClientID, cc.KeepAlive, cc.CleanStart = clientID, keepAlive, true
	if cr.token != "" {
		cc.Properties.AuthMethod, cc.Properties.AuthData = "ace", []byte(cr.token)
	}
	if cr.username != "" {
		cc.UsernameFlag, cc.Username = true, cr.username
	}
	if cr.password != "" {
		cc.PasswordFlag, cc.Password = true, []byte(cr.password)
	}
	if _, err := cp.WriteTo(c); err != nil {
		c.Close()
		return nil, err
	}
	rc := &rawConn{Conn: c, r: bufio.NewReaderSize(c, 4096), recvMax: 65535}
	p, err := packets.ReadPacket(rc.r)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	ca, ok := p.Content.(*packets.Connack)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("got %s, not CONNACK", p.PacketType())
	}
	if ca.ReasonCode >= 0x80 {
		c.Close()
		return nil, errConnack{"CONNECT", ca.ReasonCode}
	}
	if ca.Properties != nil && ca.Properties.ReceiveMaximum != nil && *ca.Properties.ReceiveMaximum > 0 {
		rc.recvMax = int(*ca.Properties.ReceiveMaximum)
	}
	_ = c.SetDeadline(time.Time{})
	return rc, nil
}

// subscribe subscribes to one filter and waits for its SUBACK.
func (c *rawConn) subscribe(filter string, qos byte, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	cp := packets.NewControlPacket(packets.SUBSCRIBE)
	s := cp.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: filter, QoS: qos}}
	if _, err := cp.WriteTo(c); err != nil {
		return err
	}
	for {
		p, err := packets.ReadPacket(c.r)
		if err != nil {
			return fmt.Errorf("SUBACK: %w", err)
		}
		if sa, ok := p.Content.(*packets.Suback); ok {
			if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
				code := byte(0x80)
				if len(sa.Reasons) == 1 {
					code = sa.Reasons[0]
				}
				return errConnack{"SUBSCRIBE " + filter, code}
			}
			return nil
		}
		if d, ok := p.Content.(*packets.Disconnect); ok {
			return errConnack{"SUBSCRIBE " + filter + ": DISCONNECT", d.ReasonCode}
		}
	}
}

// Packet types as they appear in the first byte's high nibble.
const (
	ptPublish    = 3
	ptPuback     = 4
	ptPingresp   = 13
	ptDisconnect = 14
)

// readHeader reads one fixed header: the type, the flags and the remaining
// length.
func readHeader(r *bufio.Reader) (typ, flags byte, remaining int, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, 0, 0, err
	}
	mul := 1
	for i := 0; ; i++ {
		x, err := r.ReadByte()
		if err != nil {
			return 0, 0, 0, err
		}
		remaining += int(x&0x7f) * mul
		if x&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, 0, 0, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	return b >> 4, b & 0x0f, remaining, nil
}

// appendVBI appends n as an MQTT variable byte integer.
func appendVBI(b []byte, n int) []byte {
	for {
		x := byte(n % 128)
		n /= 128
		if n > 0 {
			x |= 0x80
		}
		b = append(b, x)
		if n == 0 {
			return b
		}
	}
}

// publishPacket encodes an MQTT 5 PUBLISH (no properties). For QoS 1 the
// packet identifier is at the offset returned, to be set per message.
func publishPacket(topic string, qos byte, payload []byte) (pk []byte, idAt int) {
	rem := 2 + len(topic) + 1 + len(payload) // topic, property length 0, payload
	if qos > 0 {
		rem += 2
	}
	pk = append(pk, ptPublish<<4|qos<<1)
	pk = appendVBI(pk, rem)
	pk = append(pk, byte(len(topic)>>8), byte(len(topic)))
	pk = append(pk, topic...)
	idAt = -1
	if qos > 0 {
		idAt = len(pk)
		pk = append(pk, 0, 0)
	}
	pk = append(pk, 0)
	return append(pk, payload...), idAt
}

// readPacketID reads the packet identifier of a PUBLISH of QoS > 0 whose
// fixed header has been read, and discards the rest of it.
func readPublishID(r *bufio.Reader, remaining int) (uint16, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	tl := int(h[0])<<8 | int(h[1])
	if _, err := r.Discard(tl); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	if _, err := r.Discard(remaining - 4 - tl); err != nil {
		return 0, err
	}
	return uint16(h[0])<<8 | uint16(h[1]), nil
}
