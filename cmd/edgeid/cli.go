// What every client subcommand shares: the --socket and --json flags, the
// typed admin client, the ask-then-print shape (show), and the table and JSON
// printers. Each subcommand has its own file (status.go, sessions.go,
// devices.go, ...).

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
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

// configUsage is the usage of -c/--config where the default file is read.
const configUsage = "configuration file (default " + config.DefaultPath + " if it exists)"

// configFlags is the flag set of a subcommand that reads the configuration
// itself instead of asking the daemon (serve, doctor, enroll): -c/--config,
// with usage.
func configFlags(name, usage string) (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	return fs, fs.StringP("config", "c", "", usage)
}

// show is the shape of every subcommand that asks the daemon one thing: parse
// args into f (the subcommand adds its own flags to f.fs first), ask with get,
// and print the answer as JSON (--json) or with text. get takes the client
// first, so a method expression such as (*admin.Client).Status will do; an
// error from get (a usage error, a refused request) is returned as it is.
func show[T any](ctx context.Context, f cliFlags, args []string, get func(*admin.Client, context.Context) (T, error), text func(T) error) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	v, err := get(f.client(), ctx)
	if err != nil {
		return err
	}
	return output(*f.json, v, text)
}

// output prints v as JSON when asJSON, else with text.
func output[T any](asJSON bool, v T, text func(T) error) error {
	if asJSON {
		return printJSON(v)
	}
	return text(v)
}

// listing prints a list as a table under header, one row per element.
func listing[E any](header string, row func(E) []string) func([]E) error {
	return func(es []E) error {
		var rows [][]string
		for _, e := range es {
			rows = append(rows, row(e))
		}
		return table(header, rows)
	}
}

// keyValues prints the rows made of v as a KEY VALUE table.
func keyValues[T any](rows func(T) [][]string) func(T) error {
	return func(v T) error { return table("KEY\tVALUE", rows(v)) }
}

// printJSON prints v as indented JSON (--json).
func printJSON(v any) error {
	e := json.NewEncoder(stdout)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// printf prints to stdout, for the one-line answers.
func printf(format string, a ...any) error {
	_, err := fmt.Fprintf(stdout, format, a...)
	return err
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
