package main

import (
	"context"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
)

// runPair opens (or with --window 0 closes) the pairing window (POST /v1/pair).
func runPair(ctx context.Context, args []string) error {
	f := newCLIFlags("pair")
	window := f.fs.Duration("window", 5*time.Minute, "how long to keep the pairing window open (0 closes it)")
	get := func(c *admin.Client, ctx context.Context) (admin.PairResult, error) { return c.Pair(ctx, *window) }
	return show(ctx, f, args, get, func(r admin.PairResult) error {
		if r.Until.IsZero() {
			return printf("pairing window closed\n")
		}
		return printf("pairing window open until %s\n", r.Until.Format(time.RFC3339))
	})
}
