package main

import (
	"context"
	"fmt"
)

// runDevices lists the store's devices (GET /v1/devices).
func runDevices(ctx context.Context, args []string) error {
	f := newCLIFlags("devices")
	online := f.fs.Bool("online", false, "only devices with a live session")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	ds, err := f.client().Devices(ctx, *online)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(ds)
	}
	var rows [][]string
	for _, d := range ds {
		auth := "token"
		if d.CertSHA256 != "" || d.CertSerial != "" {
			auth = "token,certificate"
		}
		rows = append(rows, []string{d.ID, d.Class, string(d.Status), d.Owner, d.Serial, auth, fmt.Sprint(d.Sessions)})
	}
	return table("DEVICE\tCLASS\tSTATUS\tOWNER\tSERIAL\tAUTH\tSESSIONS", rows)
}
