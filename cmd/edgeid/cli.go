// What every client subcommand shares: the --socket and --json flags, the
// typed admin client, and the table and JSON printers. Each subcommand has its
// own file (status.go, sessions.go, devices.go, ...).

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/edge/admin"
)

var stdout io.Writer = os.Stdout

// cliFlags are the flags of every subcommand that talks to the daemon.
type cliFlags struct {
	fs     *pflag.FlagSet
	socket *string
	json   *bool
}

func newCLIFlags(name string) cliFlags {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	def := "/run/edgeid/admin.sock"
	if s := os.Getenv("EDGEID_ADMIN_SOCKET"); s != "" {
		def = s
	}
	return cliFlags{fs: fs, socket: fs.String("socket", def, "admin API socket of the running daemon"), json: fs.Bool("json", false, "print JSON")}
}

func (c cliFlags) client() *admin.Client { return admin.NewClient(*c.socket) }

// printJSON prints v as indented JSON (--json).
func printJSON(v any) error {
	e := json.NewEncoder(stdout)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// table prints a header and rows, aligned.
func table(header string, rows [][]string) error {
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}
