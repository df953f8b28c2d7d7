package edge

import (
	"context"
	"encoding/json"

	"github.com/edgeid/edgeid/cloudsync"
)

// pairRelay answers a device's pairing step ({"op":"start"} or
// {"op":"poll","device_code":...}) by asking the authority on its behalf.
// The gateway must be online for this: it says so rather than guess.
func (g *Gateway) pairRelay(ctx context.Context, device string, request []byte) []byte {
	answer := func(v any) []byte {
		b, _ := json.Marshal(v)
		return b
	}
	var req cloudsync.PairRelayRequest
	if err := json.Unmarshal(request, &req); err != nil || (req.Op != "start" && req.Op != "poll") {
		return answer(map[string]string{"error": "invalid_request", "error_description": `send {"op":"start"} or {"op":"poll","device_code":"..."}`})
	}
	if g.Syncer == nil {
		return answer(map[string]string{"error": "not_enrolled", "error_description": "this gateway is not enrolled with an authority; pair over HTTPS or enroll the gateway"})
	}
	req.Device = device // a device pairs itself only
	m, _, err := g.Syncer.Relay(ctx, req)
	if err != nil {
		g.log.Warn("pairing relay: authority unreachable", "device", device, "err", err)
		return answer(map[string]string{"error": "gateway_offline", "error_description": "the gateway cannot reach the authority right now; pairing needs it; try again later"})
	}
	g.log.Info("pairing relayed", "device", device, "op", req.Op)
	return answer(m)
}
