package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/edgeid/edgeid/edge/admin"
)

// runImport applies a provisioning file (POST /v1/import), checked locally first.
func runImport(ctx context.Context, args []string) error {
	f := newCLIFlags("import")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() != 1 {
		return fmt.Errorf("usage: edgeid import [--socket PATH] FILE (use - for standard input)")
	}
	var in io.Reader = os.Stdin
	if name := f.fs.Arg(0); name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	// Check locally first: a malformed file gets its error without a daemon.
	b, err := admin.DecodeBatch(in)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	r, err := f.client().Import(ctx, raw)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(r)
	}
	_, err = fmt.Fprintf(stdout, "imported %d record(s) as store rev %d\n", r.Records, r.Rev)
	return err
}
