package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
)

// runSessions lists live sessions, MQTT and CoAP (GET /v1/sessions).
func runSessions(ctx context.Context, args []string) error {
	return show(ctx, newCLIFlags("sessions"), args, (*admin.Client).Sessions, listing("DEVICE\tPROTOCOL\tMETHOD\tSUBJECT\tREMOTE\tCONNECTED\tEXPIRES", func(s admin.Session) []string {
		proto, expires := s.Transport, "-"
		if s.Transport == "mqtt" {
			proto = fmt.Sprintf("mqtt v%d", s.Protocol)
			if s.Offline {
				proto = fmt.Sprintf("mqtt v%d, offline, %d queued", s.Protocol, s.Queued)
			}
		} else if s.Observations > 0 {
			proto = fmt.Sprintf("%s, %d observing", s.Transport, s.Observations)
		} else if s.Filter != "" {
			proto = fmt.Sprintf("%s, events of %s", s.Transport, s.Filter)
		}
		if !s.Expires.IsZero() {
			expires = s.Expires.Format(time.RFC3339)
		}
		return []string{s.Device, proto, s.Method, s.Subject, s.Remote, s.ConnectedAt.Format(time.RFC3339), expires}
	}))
}
