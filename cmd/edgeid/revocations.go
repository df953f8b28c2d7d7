package main

import (
	"context"
	"time"
)

// runRevocations lists the revocations held (GET /v1/revocations).
func runRevocations(ctx context.Context, args []string) error {
	f := newCLIFlags("revocations")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	rs, err := f.client().Revocations(ctx)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(rs)
	}
	var rows [][]string
	for _, r := range rs {
		exp := "never"
		if !r.ExpiresAt.IsZero() {
			exp = r.ExpiresAt.Format(time.RFC3339)
		}
		rows = append(rows, []string{string(r.Kind), r.Value, r.RevokedAt.Format(time.RFC3339), exp, r.Reason})
	}
	return table("KIND\tVALUE\tREVOKED\tKEPT UNTIL\tREASON", rows)
}
