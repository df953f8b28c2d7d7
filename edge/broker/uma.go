package broker

import (
	"context"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The UMA challenge over MQTT 5: a SUBSCRIBE filter refused (0x87) that is
// an owner's shared resource gets, in its SUBACK, the permission ticket the
// client takes to the authority for a requesting party token, as the reason
// string `uma ticket="…" as_uri="…"` and the user properties uma-ticket and
// as_uri (UMA 2.0 Grant §3.2 defines only the HTTP form; this is its MQTT
// counterpart). mochi builds the SUBACK itself: umaHook's OnSubscribed (which
// mochi calls with the reason codes just before writing the SUBACK, on the
// client's read loop) finds the ticket, and its OnPacketEncode adds it to
// that SUBACK. No mochi patch is needed.

// Ticket is what a refused SUBSCRIBE's SUBACK says of the UMA grant.
type Ticket struct {
	Ticket, ASURI string
	// Err, when set, is why a shared resource's refusal carries no ticket
	// (the authority unreachable); logged, and the client told so briefly.
	Err error
}

// ticketTimeout bounds Broker.UMA on the client's read loop.
const ticketTimeout = 2 * time.Second

// subackNote is what umaHook adds to the SUBACK of one SUBSCRIBE.
type subackNote struct {
	packetID uint16
	reason   string
	user     []packets.UserProperty
}

// Reason strings of refused SUBSCRIBE filters.
const (
	reasonHeld        = "not authorized now: the share is outside its hours"
	reasonUnavailable = "not authorized: a shared resource, but no permission ticket now (the authority is unreachable)"
)

type umaHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *umaHook) ID() string { return "edgeid-uma" }

func (h *umaHook) Provides(x byte) bool { return x == mqtt.OnSubscribed || x == mqtt.OnPacketEncode }

// OnSubscribed looks at the filters refused for lack of permission: those
// of a share outside its hours are said so; for the others, Broker.UMA is
// asked (it calls the authority only for filters that are a shared
// resource, within ticketTimeout).
func (h *umaHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	b := h.b
	if cl.Net.Inline || cl.Properties.ProtocolVersion < 5 {
		return // MQTT 3.1.1 SUBACKs have no properties
	}
	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0 {
		return // the client asked for no reason strings or user properties (MQTT-3.1.2-29)
	}
	s := b.Sessions.get(cl)
	if s == nil || s.ended.Load() {
		return
	}
	perms := s.Perms()
	held := false
	var ask []string
	for i, sub := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] != packets.ErrNotAuthorized.Code {
			continue
		}
		f := sharedFilter(sub.Filter)
		if perms.Holds(f) {
			held = true
			continue
		}
		ask = append(ask, f)
	}
	var note *subackNote
	if len(ask) > 0 && b.UMA != nil {
		ctx, cancel := context.WithTimeout(context.Background(), ticketTimeout)
		t, shared := b.UMA(ctx, s.Subject, ask)
		cancel()
		switch {
		case shared && t.Err == nil && t.Ticket != "":
			note = &subackNote{reason: `uma ticket="` + t.Ticket + `" as_uri="` + t.ASURI + `"`,
				user: []packets.UserProperty{{Key: "uma-ticket", Val: t.Ticket}, {Key: "as_uri", Val: t.ASURI}}}
			b.Log.Info("subscribe refused with a permission ticket", "device", s.Device, "client", s.ClientID, "filters", ask)
		case shared:
			b.Log.Warn("subscribe refused without a permission ticket", "device", s.Device, "client", s.ClientID, "filters", ask, "err", t.Err)
			note = &subackNote{reason: reasonUnavailable}
		}
	}
	if note == nil && held {
		note = &subackNote{reason: reasonHeld}
	}
	if note != nil {
		note.packetID = pk.PacketID
		s.suback.Store(note)
	}
}

// OnPacketEncode adds the note OnSubscribed left to the SUBACK it was for
// (mochi writes it right after OnSubscribed, on the same goroutine). Every
// other packet passes untouched.
func (h *umaHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Suback {
		return pk
	}
	s := h.b.Sessions.get(cl)
	if s == nil {
		return pk
	}
	n := s.suback.Swap(nil)
	if n == nil || n.packetID != pk.PacketID {
		return pk
	}
	pk.Properties.ReasonString = n.reason
	if len(n.user) > 0 {
		pk.Properties.User = append(append([]packets.UserProperty(nil), pk.Properties.User...), n.user...)
	}
	return pk
}
