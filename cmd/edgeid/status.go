package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
)

// runStatus prints the daemon's status (GET /v1/status).
func runStatus(ctx context.Context, args []string) error {
	return show(ctx, newCLIFlags("status"), args, (*admin.Client).Status, keyValues(statusRows))
}

// statusRows are the KEY VALUE rows of edgeid status.
func statusRows(s admin.Status) [][]string {
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
	return rows
}
