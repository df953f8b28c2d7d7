package main

import (
	"context"
	"fmt"
	"time"
)

// runSessions lists live sessions, MQTT and CoAP (GET /v1/sessions).
func runSessions(ctx context.Context, args []string) error {
	f := newCLIFlags("sessions")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	ss, err := f.client().Sessions(ctx)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(ss)
	}
	var rows [][]string
	for _, s := range ss {
		proto, expires := s.Transport, "-"
		if s.Transport == "mqtt" {
			proto = fmt.Sprintf("mqtt v%d", s.Protocol)
			if s.Offline {
				proto = fmt.Sprintf("mqtt v%d, offline, %d queued", s.Protocol, s.Queued)
			}
		} else if s.Observations > 0 {
			proto = fmt.Sprintf("%s, %d observing", s.Transport, s.Observations)
		}
		if !s.Expires.IsZero() {
			expires = s.Expires.Format(time.RFC3339)
		}
		rows = append(rows, []string{s.Device, proto, s.Method, s.Subject, s.Remote, s.ConnectedAt.Format(time.RFC3339), expires})
	}
	return table("DEVICE\tPROTOCOL\tMETHOD\tSUBJECT\tREMOTE\tCONNECTED\tEXPIRES", rows)
}
