package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
)

// runSync shows the link to the authority; --now retries at once (POST /v1/sync).
func runSync(ctx context.Context, args []string) error {
	f := newCLIFlags("sync")
	now := f.fs.Bool("now", false, "retry the authority at once instead of waiting for the backoff")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	var s admin.Status
	var err error
	if *now {
		s, err = f.client().SyncNow(ctx)
	} else {
		s, err = f.client().Status(ctx)
	}
	if err != nil {
		return err
	}
	if s.Sync == nil {
		return fmt.Errorf("not enrolled with an authority: run edgeid enroll")
	}
	if *f.json {
		return printJSON(s.Sync)
	}
	rows := [][]string{{"authority", s.Sync.Authority}, {"gateway", s.Sync.Gateway}, {"state", syncState(s.Sync)},
		{"cursor", fmt.Sprintf("%s/%d", s.Sync.Epoch, s.Sync.Cursor)}, {"last synced", s.Sync.SyncedAt.Format(time.RFC3339)},
		{"lag", fmt.Sprintf("%.0fs", s.Sync.LagSeconds)}}
	if !s.Sync.HeardAt.IsZero() {
		rows = append(rows, []string{"last signed heartbeat", s.Sync.HeardAt.Format(time.RFC3339)})
	}
	if s.Sync.LastError != "" {
		rows = append(rows, []string{"last error", fmt.Sprintf("%s (%d in a row)", s.Sync.LastError, s.Sync.Failures)})
	}
	return table("KEY\tVALUE", append(rows, syncDetail(s.Sync)...))
}

// syncState is one line: online, stale and why, or offline and why.
func syncState(y *admin.SyncStatus) string {
	switch {
	case y.Stale && y.Reason != "":
		return "stale: " + y.Reason
	case y.Online:
		return "online: push stream connected, store at the authority's signed head"
	case y.Reason != "":
		return "offline: " + y.Reason + " (deciding from the local store)"
	}
	return "offline: deciding from the local store; retrying with backoff"
}

// syncDetail is the signed head and the next try, when known.
func syncDetail(y *admin.SyncStatus) [][]string {
	var rows [][]string
	if y.Head > 0 {
		rows = append(rows, []string{"sync head", fmt.Sprintf("%d (authority's signed head; cursor %d)", y.Head, y.Cursor)})
	}
	if !y.NextTry.IsZero() {
		rows = append(rows, []string{"next try", fmt.Sprintf("%s (in %.0fs)", y.NextTry.Format(time.RFC3339), max(0, time.Until(y.NextTry).Seconds()))})
	}
	return rows
}
