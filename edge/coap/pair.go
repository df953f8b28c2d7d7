package coap

import (
	"bytes"
	"context"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// PathPair is the pairing relay resource for devices without HTTPS.
const PathPair = "/pair"

// pair relays a device's pairing step ({"op":"start"} or {"op":"poll",
// "device_code":...}, POST) to the authority through the gateway, only while
// the gateway's pairing window is open; the answer is the authority's JSON.
func (s *Server) pair(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message, p *session) {
	if r.Code() != codes.POST {
		reply(w, codes.MethodNotAllowed, `POST {"op":"start"} or {"op":"poll","device_code":"..."}`)
		return
	}
	if s.o.PairRelay == nil {
		reply(w, codes.NotFound, "pairing through this gateway is not available")
		return
	}
	if s.o.PairingOpen == nil || !s.o.PairingOpen() {
		reply(w, codes.Forbidden, "the pairing window is closed: press the gateway's pair button (or run edgeid pair) and try again")
		return
	}
	body, err := r.ReadBody()
	if err != nil || len(body) > 4096 {
		reply(w, codes.BadRequest, "send a small JSON body")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	answer := s.o.PairRelay(ctx, p.device, body)
	_ = w.SetResponse(codes.Changed, message.AppJSON, bytes.NewReader(answer))
}
