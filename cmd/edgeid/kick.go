package main

import (
	"context"

	"github.com/edgeid/edgeid/edge/admin"
)

// runKick ends every session of a device, subject or token (POST /v1/kick).
func runKick(ctx context.Context, args []string) error {
	f := newCLIFlags("kick")
	device := f.fs.String("device", "", "device id")
	subject := f.fs.String("subject", "", "token subject (user or service)")
	jti := f.fs.String("jti", "", "token id")
	get := func(c *admin.Client, ctx context.Context) (admin.KickResult, error) {
		if f.fs.NArg() == 1 && *device == "" {
			*device = f.fs.Arg(0)
		}
		return c.Kick(ctx, admin.KickRequest{Device: *device, Subject: *subject, JTI: *jti})
	}
	return show(ctx, f, args, get, func(r admin.KickResult) error { return printf("kicked %d session(s)\n", r.Kicked) })
}
