package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

var stdout io.Writer = os.Stdout

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

func printJSON(v any) error {
	e := json.NewEncoder(stdout)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func table(header string, rows [][]string) error {
	w := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

func runStatus(ctx context.Context, args []string) error {
	f := newCLIFlags("status")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	s, err := f.client().Status(ctx)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(s)
	}
	var recs []string
	for k, v := range s.Records {
		recs = append(recs, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(recs)
	rows := [][]string{
		{"gateway", s.Gateway}, {"version", s.Version}, {"up since", s.StartedAt.Format(time.RFC3339)},
		{"listeners", strings.Join(s.Listeners, " ")}, {"sessions", fmt.Sprint(s.Sessions)},
		{"store rev", fmt.Sprint(s.StoreRev)}, {"records", strings.Join(recs, " ")}, {"cached tokens", fmt.Sprint(s.TokenCache)},
		{"status LED", s.LED + map[bool]string{true: "", false: " (no GPIO)"}[s.Hardware]},
	}
	if !s.PairingUntil.IsZero() {
		rows = append(rows, []string{"pairing window", "open until " + s.PairingUntil.Format(time.RFC3339)})
	}
	if y := s.Sync; y != nil {
		rows = append(rows, []string{"authority", y.Authority + " as " + y.Gateway}, []string{"sync", syncState(y)},
			[]string{"sync cursor", fmt.Sprintf("%s/%d", y.Epoch, y.Cursor)}, []string{"sync lag", fmt.Sprintf("%.0fs", y.LagSeconds)})
		rows = append(rows, syncDetail(y)...)
	} else {
		rows = append(rows, []string{"sync", "not enrolled (edgeid enroll)"})
	}
	return table("KEY\tVALUE", rows)
}

func runSessions(ctx context.Context, args []string) error {
	f := newCLIFlags("sessions")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	ss, err := f.client().Sessions(ctx)
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(ss)
	}
	var rows [][]string
	for _, s := range ss {
		proto, expires := s.Transport, "-"
		if s.Transport == "mqtt" {
			proto = fmt.Sprintf("mqtt v%d", s.Protocol)
			if s.Offline {
				proto = fmt.Sprintf("mqtt v%d, offline, %d queued", s.Protocol, s.Queued)
			}
		} else if s.Observations > 0 {
			proto = fmt.Sprintf("%s, %d observing", s.Transport, s.Observations)
		}
		if !s.Expires.IsZero() {
			expires = s.Expires.Format(time.RFC3339)
		}
		rows = append(rows, []string{s.Device, proto, s.Method, s.Subject, s.Remote, s.ConnectedAt.Format(time.RFC3339), expires})
	}
	return table("DEVICE\tPROTOCOL\tMETHOD\tSUBJECT\tREMOTE\tCONNECTED\tEXPIRES", rows)
}

func runDevices(ctx context.Context, args []string) error {
	f := newCLIFlags("devices")
	online := f.fs.Bool("online", false, "only devices with a live session")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	path := "/v1/devices"
	if *online {
		path += "?online=1"
	}
	var ds []admin.Device
	if err := f.client().Do(ctx, "GET", path, nil, &ds); err != nil {
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

func runRevocations(ctx context.Context, args []string) error {
	f := newCLIFlags("revocations")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	var rs []store.Revocation
	if err := f.client().Do(ctx, "GET", "/v1/revocations", nil, &rs); err != nil {
		return err
	}
	if *f.json {
		return printJSON(rs)
	}
	var rows [][]string
	for _, r := range rs {
		exp := "never"
		if !r.ExpiresAt.IsZero() {
			exp = r.ExpiresAt.Format(time.RFC3339)
		}
		rows = append(rows, []string{string(r.Kind), r.Value, r.RevokedAt.Format(time.RFC3339), exp, r.Reason})
	}
	return table("KIND\tVALUE\tREVOKED\tKEPT UNTIL\tREASON", rows)
}

func runKick(ctx context.Context, args []string) error {
	f := newCLIFlags("kick")
	device := f.fs.String("device", "", "device id")
	subject := f.fs.String("subject", "", "token subject (user or service)")
	jti := f.fs.String("jti", "", "token id")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() == 1 && *device == "" {
		*device = f.fs.Arg(0)
	}
	r, err := f.client().Kick(ctx, admin.KickRequest{Device: *device, Subject: *subject, JTI: *jti})
	if err != nil {
		return err
	}
	if *f.json {
		return printJSON(r)
	}
	_, err = fmt.Fprintf(stdout, "kicked %d session(s)\n", r.Kicked)
	return err
}

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
	b, err := edge.DecodeBatch(in)
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

func runVersion(ctx context.Context, args []string) error {
	_, err := fmt.Fprintf(stdout, "edgeid %s\n", edge.Version)
	return err
}

func runSync(ctx context.Context, args []string) error {
	f := newCLIFlags("sync")
	now := f.fs.Bool("now", false, "retry the authority at once instead of waiting for the backoff")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	var s admin.Status
	var err error
	if *now {
		err = f.client().Do(ctx, "POST", "/v1/sync", nil, &s)
	} else {
		s, err = f.client().Status(ctx)
	}
	if err != nil {
		return err
	}
	if s.Sync == nil {
		return fmt.Errorf("not enrolled with an authority: run edgeid enroll")
	}
	if *f.json {
		return printJSON(s.Sync)
	}
	rows := [][]string{{"authority", s.Sync.Authority}, {"gateway", s.Sync.Gateway}, {"state", syncState(s.Sync)},
		{"cursor", fmt.Sprintf("%s/%d", s.Sync.Epoch, s.Sync.Cursor)}, {"last synced", s.Sync.SyncedAt.Format(time.RFC3339)},
		{"lag", fmt.Sprintf("%.0fs", s.Sync.LagSeconds)}}
	if !s.Sync.HeardAt.IsZero() {
		rows = append(rows, []string{"last signed heartbeat", s.Sync.HeardAt.Format(time.RFC3339)})
	}
	if s.Sync.LastError != "" {
		rows = append(rows, []string{"last error", fmt.Sprintf("%s (%d in a row)", s.Sync.LastError, s.Sync.Failures)})
	}
	return table("KEY\tVALUE", append(rows, syncDetail(s.Sync)...))
}

// syncState is one line: online, stale and why, or offline and why.
func syncState(y *admin.SyncStatus) string {
	switch {
	case y.Stale && y.Reason != "":
		return "stale: " + y.Reason
	case y.Online:
		return "online: push stream connected, store at the authority's signed head"
	case y.Reason != "":
		return "offline: " + y.Reason + " (deciding from the local store)"
	}
	return "offline: deciding from the local store; retrying with backoff"
}

// syncDetail is the signed head and the next try, when known.
func syncDetail(y *admin.SyncStatus) [][]string {
	var rows [][]string
	if y.Head > 0 {
		rows = append(rows, []string{"sync head", fmt.Sprintf("%d (authority's signed head; cursor %d)", y.Head, y.Cursor)})
	}
	if !y.NextTry.IsZero() {
		rows = append(rows, []string{"next try", fmt.Sprintf("%s (in %.0fs)", y.NextTry.Format(time.RFC3339), max(0, time.Until(y.NextTry).Seconds()))})
	}
	return rows
}

func runPair(ctx context.Context, args []string) error {
	f := newCLIFlags("pair")
	window := f.fs.Duration("window", 5*time.Minute, "how long to keep the pairing window open (0 closes it)")
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	var r admin.PairResult
	if err := f.client().Do(ctx, "POST", "/v1/pair", admin.PairRequest{Window: window.String()}, &r); err != nil {
		return err
	}
	if *f.json {
		return printJSON(r)
	}
	if r.Until.IsZero() {
		_, err := fmt.Fprintln(stdout, "pairing window closed")
		return err
	}
	_, err := fmt.Fprintf(stdout, "pairing window open until %s\n", r.Until.Format(time.RFC3339))
	return err
}
