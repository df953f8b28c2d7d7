package bridge

import (
	"encoding/binary"
	"errors"
)

// Message is one message crossing the bridge, in either direction.
type Message struct {
	Topic       string // the local topic
	Payload     []byte
	QoS         byte
	Retain      bool
	Device      string // the publishing device ("" for the gateway or the cloud)
	ContentType string
}

func (m Message) size() int {
	return 7 + len(m.Topic) + len(m.Device) + len(m.ContentType) + len(m.Payload)
}

// appendTo encodes m: flags | u16 topic | u16 device | u16 content type | payload.
func (m Message) appendTo(b []byte) []byte {
	flags := m.QoS & 3
	if m.Retain {
		flags |= 4
	}
	b = append(b, flags)
	for _, s := range []string{m.Topic, m.Device, m.ContentType} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return append(b, m.Payload...)
}

var errShortMessage = errors.New("bridge queue: short message")

func decodeMessage(b []byte) (Message, error) {
	if len(b) < 7 {
		return Message{}, errShortMessage
	}
	m := Message{QoS: b[0] & 3, Retain: b[0]&4 != 0}
	b = b[1:]
	var strs [3]string
	for i := range strs {
		if len(b) < 2 {
			return Message{}, errShortMessage
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return Message{}, errShortMessage
		}
		strs[i], b = string(b[2:2+n]), b[2+n:]
	}
	m.Topic, m.Device, m.ContentType = strs[0], strs[1], strs[2]
	m.Payload = append([]byte(nil), b...)
	return m, nil
}
