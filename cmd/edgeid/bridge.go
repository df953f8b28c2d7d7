package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
)

// runBridge lists the cloud bridge's remotes: link state, queue and
// counters (GET /v1/bridge).
func runBridge(ctx context.Context, args []string) error {
	return show(ctx, newCLIFlags("bridge"), args, (*admin.Client).Bridge, listing("REMOTE\tSTATE\tQUEUED\tBYTES\tOLDEST\tFORWARDED\tRESENT\tDROPPED\tREFUSED OUT\tRECEIVED\tREFUSED IN",
		func(r admin.BridgeRemote) []string { return bridgeRow(r, time.Now()) }))
}

// bridgeRow is one remote's row of edgeid bridge at now.
func bridgeRow(r admin.BridgeRemote, now time.Time) []string {
	state := r.State + " since " + r.Since.Format(time.RFC3339)
	if r.State != "connected" && r.LastError != "" {
		state += ": " + r.LastError
	}
	if r.ClassError != "" {
		state += "; " + r.ClassError
	}
	if r.QueueError != "" {
		state += "; queue: " + r.QueueError
	}
	queued := fmt.Sprint(r.Queued)
	if r.Memory > 0 {
		queued += fmt.Sprintf(" (+%d QoS 0)", r.Memory)
	}
	oldest := "-"
	if !r.Oldest.IsZero() {
		oldest = max(0, now.Sub(r.Oldest)).Round(time.Second).String()
	}
	n := func(v uint64) string { return fmt.Sprint(v) }
	return []string{r.Remote, state, queued, fmt.Sprint(r.QueuedBytes), oldest, n(r.Forwarded), n(r.Resent), n(r.Dropped),
		n(r.RefusedOut), n(r.Received), n(r.RefusedIn)}
}
