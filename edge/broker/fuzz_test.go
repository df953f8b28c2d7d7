package broker

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// subscribeNoOptions is the v5 SUBSCRIBE whose last filter lacks its
// options byte: upstream mochi v2.7.9 indexed past the end and panicked,
// which stopped the whole gateway.
var subscribeNoOptions = []byte{0x82, 0x12, 0x00, 0x01, 0x00, 0x00, 0x0d,
	'f', 'u', 'z', 'z', '/', 'f', 'u', 'z', 'z', '-', '0', '/', '#'}

// wireCodec is how mochi handles one packet type: the decoder its client
// read loop calls, the validation processPacket then applies, and the
// encoder of Client.WritePacket.
type wireCodec struct {
	decode   func(*packets.Packet, []byte) error // nil: the body is not decoded (PINGREQ, PINGRESP)
	validate func(*packets.Packet)               // after a decode without error; nil: none
	encode   func(*packets.Packet, *bytes.Buffer) error
}

var wireCodecs = map[byte]wireCodec{
	packets.Connect:     {(*packets.Packet).ConnectDecode, func(pk *packets.Packet) { pk.ConnectValidate() }, (*packets.Packet).ConnectEncode},
	packets.Connack:     {(*packets.Packet).ConnackDecode, nil, (*packets.Packet).ConnackEncode},
	packets.Publish:     {(*packets.Packet).PublishDecode, func(pk *packets.Packet) { pk.PublishValidate(0); pk.PublishValidate(65535) }, (*packets.Packet).PublishEncode},
	packets.Puback:      {(*packets.Packet).PubackDecode, nil, (*packets.Packet).PubackEncode},
	packets.Pubrec:      {(*packets.Packet).PubrecDecode, nil, (*packets.Packet).PubrecEncode},
	packets.Pubrel:      {(*packets.Packet).PubrelDecode, nil, (*packets.Packet).PubrelEncode},
	packets.Pubcomp:     {(*packets.Packet).PubcompDecode, nil, (*packets.Packet).PubcompEncode},
	packets.Subscribe:   {(*packets.Packet).SubscribeDecode, func(pk *packets.Packet) { pk.SubscribeValidate() }, (*packets.Packet).SubscribeEncode},
	packets.Suback:      {(*packets.Packet).SubackDecode, nil, (*packets.Packet).SubackEncode},
	packets.Unsubscribe: {(*packets.Packet).UnsubscribeDecode, func(pk *packets.Packet) { pk.UnsubscribeValidate() }, (*packets.Packet).UnsubscribeEncode},
	packets.Unsuback:    {(*packets.Packet).UnsubackDecode, nil, (*packets.Packet).UnsubackEncode},
	packets.Pingreq:     {nil, nil, (*packets.Packet).PingreqEncode},
	packets.Pingresp:    {nil, nil, (*packets.Packet).PingrespEncode},
	packets.Disconnect:  {(*packets.Packet).DisconnectDecode, nil, (*packets.Packet).DisconnectEncode},
	packets.Auth:        {(*packets.Packet).AuthDecode, func(pk *packets.Packet) { pk.AuthValidate() }, (*packets.Packet).AuthEncode},
}

// decodeWire reads one packet from raw (fixed header + body) as mochi's
// Client.ReadFixedHeader and Client.ReadPacket do for a client of the
// given protocol version, and runs the validation mochi's processPacket
// applies. ok is false when raw holds no whole packet.
func decodeWire(raw []byte, version byte) (pk packets.Packet, rest []byte, ok bool, err error) {
	if len(raw) == 0 {
		return pk, nil, false, nil
	}
	fh := packets.FixedHeader{}
	if err := fh.Decode(raw[0]); err != nil {
		return pk, nil, true, err
	}
	r := bytes.NewReader(raw[1:])
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return pk, nil, true, err
	}
	body := raw[1+len(raw[1:])-r.Len():]
	if n < 0 || n > len(body) {
		return pk, nil, false, nil // mochi would wait for the rest
	}
	fh.Remaining = n
	pk.ProtocolVersion = version
	pk.FixedHeader = fh
	px := append([]byte{}, body[:n]...)
	switch c, known := wireCodecs[fh.Type]; {
	case !known:
		err = fmt.Errorf("invalid packet type; %v", fh.Type)
	case c.decode != nil:
		err = c.decode(&pk, px)
		if err == nil && c.validate != nil {
			c.validate(&pk)
		}
	}
	if err == nil {
		pk.ReasonCodeValid()
		pk.FormatID()
		_ = pk.Copy(true)
	}
	return pk, body[n:], true, err
}

// encodeWire encodes pk as mochi's Client.WritePacket does.
func encodeWire(pk packets.Packet) ([]byte, error) {
	var b bytes.Buffer
	c, known := wireCodecs[pk.FixedHeader.Type]
	if !known {
		return b.Bytes(), fmt.Errorf("no encoder for type %d", pk.FixedHeader.Type)
	}
	err := c.encode(&pk, &b)
	return b.Bytes(), err
}

// fuzzVersion maps the fuzzer's byte onto a protocol version mochi can hold
// for a client: 3, 4 or 5 once CONNECT is read (0 before: decoded as 3.1.1).
func fuzzVersion(v byte) byte {
	switch v {
	case 0, 3, 4, 5:
		return v
	}
	return []byte{3, 4, 5}[v%3]
}

// addPacketSeeds seeds f with every wire packet of mochi's own test table
// for 3.1.1 and 5, and the SUBSCRIBE that crashed upstream.
func addPacketSeeds(f *testing.F) {
	f.Add(subscribeNoOptions, byte(5))
	f.Add(subscribeNoOptions, byte(4))
	for _, cases := range packets.TPacketData() {
		for _, c := range cases {
			if len(c.RawBytes) == 0 {
				continue
			}
			f.Add(c.RawBytes, byte(4))
			f.Add(c.RawBytes, byte(5))
		}
	}
}

// FuzzDecodePacket feeds arbitrary bytes to mochi's packet decoders as a
// client's read loop would, and re-encodes every packet that decodes. No
// input may panic; what decodes must encode, and the encoding must decode
// to a packet that encodes to the same bytes (a stable round trip).
func FuzzDecodePacket(f *testing.F) {
	addPacketSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte, v byte) {
		version := fuzzVersion(v)
		pk, _, whole, err := decodeWire(raw, version)
		if !whole || err != nil {
			return
		}
		// mochi discards a PINGREQ's (or PINGRESP's) body, and their
		// encoders write the Remaining Length they are given: mochi builds
		// the ones it sends with 0.
		if t := pk.FixedHeader.Type; t == packets.Pingreq || t == packets.Pingresp {
			pk.FixedHeader.Remaining = 0
		}
		// A decoded CONNECT carries its own protocol version; other packets
		// are encoded with the client's, as mochi does.
		enc, err := encodeWire(pk)
		if err != nil {
			return // some decoded packets are refused by the encoder (e.g. over a size mod); not a crash
		}
		pk2, rest, whole, err := decodeWire(enc, pk.ProtocolVersion)
		if !whole || err != nil {
			t.Fatalf("type %d v%d: % x decoded, was encoded as % x, which does not decode: whole=%v err=%v",
				pk.FixedHeader.Type, version, raw, enc, whole, err)
		}
		if len(rest) != 0 {
			t.Fatalf("type %d v%d: encoding % x has %d trailing bytes", pk.FixedHeader.Type, version, enc, len(rest))
		}
		enc2, err := encodeWire(pk2)
		if err != nil {
			t.Fatalf("type %d v%d: re-decoded packet does not encode: %v", pk.FixedHeader.Type, version, err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("type %d v%d: round trip unstable:\n in  % x\n enc % x\n enc2 % x", pk.FixedHeader.Type, version, raw, enc, enc2)
		}
	})
}

// The crasher decodes as malformed, not a panic, for both versions.
func TestDecodeSubscribeWithoutOptionsByte(t *testing.T) {
	for _, v := range []byte{4, 5} {
		_, _, whole, err := decodeWire(subscribeNoOptions, v)
		if !whole || err == nil {
			t.Errorf("v%d: whole=%v err=%v, want a decode error", v, whole, err)
		}
	}
}
