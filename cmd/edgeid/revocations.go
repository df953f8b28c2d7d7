package main

import (
	"context"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

// runRevocations lists the revocations held (GET /v1/revocations).
func runRevocations(ctx context.Context, args []string) error {
	return show(ctx, newCLIFlags("revocations"), args, (*admin.Client).Revocations, listing("KIND\tVALUE\tREVOKED\tKEPT UNTIL\tREASON", func(r store.Revocation) []string {
		exp := "never"
		if !r.ExpiresAt.IsZero() {
			exp = r.ExpiresAt.Format(time.RFC3339)
		}
		return []string{string(r.Kind), r.Value, r.RevokedAt.Format(time.RFC3339), exp, r.Reason}
	}))
}
