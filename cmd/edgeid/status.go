package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// runStatus prints the daemon's status (GET /v1/status).
func runStatus(ctx context.Context, args []string) error {
	f := newCLIFlags("status")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	s, err := f.client().Status(ctx)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(s)
	}
	var recs []string
	for k, v := range s.Records {
		recs = append(recs, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(recs)
	rows := [][]string{
		{"gateway", s.Gateway}, {"version", s.Version}, {"up since", s.StartedAt.Format(time.RFC3339)},
		{"listeners", strings.Join(s.Listeners, " ")}, {"sessions", fmt.Sprint(s.Sessions)},
		{"store rev", fmt.Sprint(s.StoreRev)}, {"records", strings.Join(recs, " ")}, {"cached tokens", fmt.Sprint(s.TokenCache)},
		{"status LED", s.LED + map[bool]string{true: "", false: " (no GPIO)"}[s.Hardware]},
	}
	if !s.PairingUntil.IsZero() {
		rows = append(rows, []string{"pairing window", "open until " + s.PairingUntil.Format(time.RFC3339)})
	}
	if y := s.Sync; y != nil {
		rows = append(rows, []string{"authority", y.Authority + " as " + y.Gateway}, []string{"sync", syncState(y)},
			[]string{"sync cursor", fmt.Sprintf("%s/%d", y.Epoch, y.Cursor)}, []string{"sync lag", fmt.Sprintf("%.0fs", y.LagSeconds)})
		rows = append(rows, syncDetail(y)...)
	} else {
		rows = append(rows, []string{"sync", "not enrolled (edgeid enroll)"})
	}
	return table("KEY\tVALUE", rows)
}
