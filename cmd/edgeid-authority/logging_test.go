package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/sysd"
)

func stubJournal(t *testing.T, under, enabled bool) {
	t.Helper()
	u, e := underJournal, journalEnabled
	underJournal = func() bool { return under }
	journalEnabled = func() bool { return enabled }
	t.Cleanup(func() { underJournal, journalEnabled = u, e })
}

// auto is journald when systemd connected stderr to the journal, text
// otherwise; an explicit format is kept either way.
func TestLogFormat(t *testing.T) {
	for _, tc := range []struct {
		format string
		under  bool
		want   string
	}{
		{"auto", false, "text"}, {"auto", true, "journald"},
		{"text", true, "text"}, {"json", true, "json"}, {"journald", false, "journald"},
	} {
		stubJournal(t, tc.under, true)
		if got := logFormat(Log{Level: "info", Format: tc.format}); got != tc.want {
			t.Errorf("format %s, under journal %v: %s, want %s", tc.format, tc.under, got, tc.want)
		}
	}
}

// log.level is applied; json is JSON.
func TestLogLevel(t *testing.T) {
	stubJournal(t, false, false)
	var buf bytes.Buffer
	log, err := newLogger(Log{Level: "warn", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("not this")
	log.Warn("this", "device", "thermo-1")
	if got := buf.String(); strings.Contains(got, "not this") || !strings.HasPrefix(got, "{") || !strings.Contains(got, `"msg":"this","device":"thermo-1"`) {
		t.Errorf("log at warn, json: %q", got)
	}
	buf.Reset()
	log, _ = newLogger(Log{Level: "debug", Format: "auto"}, &buf)
	log.Debug("shown")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=shown") {
		t.Errorf("log at debug, auto outside systemd (text): %q", got)
	}
}

// journald logs through the gateway's handler, with the gateway's field
// names and the authority's identifier; asked for without a journal, start
// fails naming log.format.
func TestLogJournald(t *testing.T) {
	stubJournal(t, true, true)
	log, err := newLogger(Log{Level: "info", Format: "auto"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := log.Handler().(*sysd.JournalHandler)
	if !ok {
		t.Fatalf("handler %T, want *sysd.JournalHandler", log.Handler())
	}
	if h.Enabled(context.Background(), slog.LevelDebug) || !h.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("journal handler ignores log.level")
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "client authentication refused", 0)
	r.AddAttrs(slog.String("gateway", "gw-1"), slog.String("device", "thermo-1"), slog.String("reason", "unknown device"),
		slog.String("remote", "192.0.2.7:5000"), slog.String("client", "app-1"))
	f := h.Fields(r)
	for k, want := range map[string]string{"SYSLOG_IDENTIFIER": "edgeid-authority", "GATEWAY": "gw-1", "DEVICE_ID": "thermo-1",
		"REASON": "unknown device", "REMOTE": "192.0.2.7:5000", "CLIENT_ID": "app-1"} {
		if f[k] != want {
			t.Errorf("journal field %s = %q, want %q (fields %v)", k, f[k], want, f)
		}
	}

	stubJournal(t, false, false)
	if _, err := newLogger(Log{Level: "info", Format: "journald"}, nil); err == nil || !strings.HasPrefix(err.Error(), "log.format: journald") {
		t.Errorf("journald without a journal: %v", err)
	}
}
