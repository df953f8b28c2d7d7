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
	get := func(c *admin.Client, ctx context.Context) (*admin.SyncStatus, error) {
		ask := c.Status
		if *now {
			ask = c.SyncNow
		}
		s, err := ask(ctx)
		if err != nil {
			return nil, err
		}
		if s.Sync == nil {
			return nil, fmt.Errorf("not enrolled with an authority: run edgeid enroll")
		}
		return s.Sync, nil
	}
	return show(ctx, f, args, get, keyValues(syncRows))
}

// syncRows are the KEY VALUE rows of edgeid sync.
func syncRows(y *admin.SyncStatus) [][]string {
	rows := [][]string{{"authority", y.Authority}, {"gateway", y.Gateway}, {"state", syncState(y)},
		{"cursor", fmt.Sprintf("%s/%d", y.Epoch, y.Cursor)}, {"last synced", y.SyncedAt.Format(time.RFC3339)},
		{"lag", fmt.Sprintf("%.0fs", y.LagSeconds)}}
	if !y.HeardAt.IsZero() {
		rows = append(rows, []string{"last signed heartbeat", y.HeardAt.Format(time.RFC3339)})
	}
	if y.LastError != "" {
		rows = append(rows, []string{"last error", fmt.Sprintf("%s (%d in a row)", y.LastError, y.Failures)})
	}
	return append(rows, syncDetail(y)...)
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
