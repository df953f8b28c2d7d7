package main

import (
	"context"
	"fmt"

	"github.com/edgeid/edgeid/edge/admin"
)

// runKick ends every session of a device, subject or token (POST /v1/kick).
func runKick(ctx context.Context, args []string) error {
	f := newCLIFlags("kick")
	device := f.fs.String("device", "", "device id")
	subject := f.fs.String("subject", "", "token subject (user or service)")
	jti := f.fs.String("jti", "", "token id")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() == 1 && *device == "" {
		*device = f.fs.Arg(0)
	}
	r, err := f.client().Kick(ctx, admin.KickRequest{Device: *device, Subject: *subject, JTI: *jti})
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(r)
	}
	_, err = fmt.Fprintf(stdout, "kicked %d session(s)\n", r.Kicked)
	return err
}
