package main

import (
	"context"
	"fmt"
	"time"
)

// runPair opens (or with --window 0 closes) the pairing window (POST /v1/pair).
func runPair(ctx context.Context, args []string) error {
	f := newCLIFlags("pair")
	window := f.fs.Duration("window", 5*time.Minute, "how long to keep the pairing window open (0 closes it)")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	r, err := f.client().Pair(ctx, *window)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(r)
	}
	if r.Until.IsZero() {
		_, err = fmt.Fprintln(stdout, "pairing window closed")
		return err
	}
	_, err = fmt.Fprintf(stdout, "pairing window open until %s\n", r.Until.Format(time.RFC3339))
	return err
}
