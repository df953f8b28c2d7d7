package main

import (
	"errors"
	"io"
	"log/slog"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/edgeid/edgeid/edge/sysd"
)

// underJournal reports whether systemd connected stderr to journald
// (JOURNAL_STREAM names it); a variable so tests can say either.
var underJournal = sysd.UseJournal

// journalEnabled reports whether journald's socket is there to write to.
var journalEnabled = journal.Enabled

// logFormat is the format c asks for, auto resolved: journald under
// systemd, else text.
func logFormat(c Log) string {
	if c.Format == "auto" || c.Format == "" {
		if underJournal() {
			return "journald"
		}
		return "text"
	}
	return c.Format
}

// newLogger logs at c.Level: text or JSON on stderr, or to journald with
// structured fields (the gateway's handler, edge/sysd, which imports
// nothing of the gateway): the authority's slog keys gateway, device,
// client, remote, reason become GATEWAY, DEVICE_ID, CLIENT_ID, REMOTE,
// REASON, so `journalctl -u edgeid-authority DEVICE_ID=thermo-1` finds a
// device's story; entries carry SYSLOG_IDENTIFIER=edgeid-authority.
func newLogger(c Log, stderr io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, errors.New("log.level: " + err.Error())
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch logFormat(c) {
	case "journald":
		if !journalEnabled() {
			return nil, errors.New("log.format: journald, but there is no journal socket (/run/systemd/journal/socket); use text or json")
		}
		return slog.New(sysd.NewJournalHandler(lvl)).With("syslog_identifier", "edgeid-authority"), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(stderr, opts)), nil
}
