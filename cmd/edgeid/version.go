package main

import (
	"context"
	"fmt"

	"github.com/edgeid/edgeid/edge"
)

// runVersion prints the version; it needs no daemon.
func runVersion(ctx context.Context, args []string) error {
	_, err := fmt.Fprintf(stdout, "edgeid %s\n", edge.Version)
	return err
}
