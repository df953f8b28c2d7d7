package main

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
)

// runDoctor checks the gateway's configuration, store, listeners, clock,
// enrollment, authority, certificates, bridge remotes and disk, and says what
// to fix.
func runDoctor(ctx context.Context, args []string) error {
	fs, path := configFlags("doctor", configUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(viper.New(), *path)
	checks := edge.Doctor(ctx, cfg, err, edge.DoctorOptions{})
	if err := output(*asJSON, checks, listing("CHECK\tRESULT\tDETAIL", func(c edge.Check) []string {
		return []string{c.Name, strings.ToUpper(c.Result), c.Detail}
	})); err != nil {
		return err
	}
	if slices.ContainsFunc(checks, func(c edge.Check) bool { return c.Result == "fail" }) {
		return errors.New("some checks failed (see above)")
	}
	return nil
}
