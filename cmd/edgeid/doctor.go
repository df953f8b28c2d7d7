package main

import (
	"context"
	"errors"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
)

// runDoctor checks the gateway's configuration, store, listeners, clock,
// enrollment, authority, certificates and disk, and says what to fix.
func runDoctor(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	path := fs.StringP("config", "c", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(viper.New(), *path)
	checks := edge.Doctor(ctx, cfg, err, edge.DoctorOptions{})
	failed := false
	var rows [][]string
	for _, c := range checks {
		failed = failed || c.Result == "fail"
		rows = append(rows, []string{c.Name, strings.ToUpper(c.Result), c.Detail})
	}
	if *asJSON {
		err = printJSON(checks)
	} else {
		err = table("CHECK\tRESULT\tDETAIL", rows)
	}
	if err != nil {
		return err
	}
	if failed {
		return errors.New("some checks failed (see above)")
	}
	return nil
}
