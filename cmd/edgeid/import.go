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
	get := func(c *admin.Client, ctx context.Context) (admin.ImportResult, error) {
		raw, err := readBatch(f)
		if err != nil {
			return admin.ImportResult{}, err
		}
		return c.Import(ctx, raw)
	}
	return show(ctx, f, args, get, func(r admin.ImportResult) error {
		return printf("imported %d record(s) as store rev %d\n", r.Records, r.Rev)
	})
}

// readBatch reads and checks the file named by the one argument (- for
// standard input) locally first: a malformed file gets its error without a
// daemon.
func readBatch(f cliFlags) (json.RawMessage, error) {
	if f.fs.NArg() != 1 {
		return nil, fmt.Errorf("usage: edgeid import [--socket PATH] FILE (use - for standard input)")
	}
	var in io.Reader = os.Stdin
	if name := f.fs.Arg(0); name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer file.Close()
		in = file
	}
	b, err := admin.DecodeBatch(in)
	if err != nil {
		return nil, err
	}
	return json.Marshal(b)
}
