package main

import (
	"context"

	"github.com/edgeid/edgeid/edge"
)

// runVersion prints the version; it needs no daemon.
func runVersion(ctx context.Context, args []string) error {
	return printf("edgeid %s\n", edge.Version)
}
