package main

import (
	"context"
	"fmt"

	"github.com/edgeid/edgeid/edge/admin"
)

// runDevices lists the store's devices (GET /v1/devices).
func runDevices(ctx context.Context, args []string) error {
	f := newCLIFlags("devices")
	online := f.fs.Bool("online", false, "only devices with a live session")
	get := func(c *admin.Client, ctx context.Context) ([]admin.Device, error) { return c.Devices(ctx, *online) }
	return show(ctx, f, args, get, listing("DEVICE\tCLASS\tSTATUS\tOWNER\tSERIAL\tAUTH\tSESSIONS", func(d admin.Device) []string {
		auth := "token"
		if d.CertSHA256 != "" || d.CertSerial != "" {
			auth = "token,certificate"
		}
		return []string{d.ID, d.Class, string(d.Status), d.Owner, d.Serial, auth, fmt.Sprint(d.Sessions)}
	}))
}
