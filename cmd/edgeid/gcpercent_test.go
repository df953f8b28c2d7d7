package main

import (
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"testing"

	"github.com/edgeid/edgeid/edge/config"
)

// serve gives the collector gateway.gc_percent, unless GOGC is set in the
// environment. Not parallel: the setting is the process's.
func TestSetGCPercent(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC") // t.Setenv puts back whatever was there
	setGCPercent(config.Gateway{GCPercent: 37}, log)
	if got := debug.SetGCPercent(100); got != 37 {
		t.Fatalf("GOGC after gateway.gc_percent 37: %d", got)
	}
	t.Setenv("GOGC", "") // set but empty: Go's default, not an override
	setGCPercent(config.Gateway{GCPercent: 42}, log)
	if got := debug.SetGCPercent(100); got != 42 {
		t.Fatalf("GOGC after gateway.gc_percent 42 with GOGC empty: %d", got)
	}
	t.Setenv("GOGC", "80")
	setGCPercent(config.Gateway{GCPercent: 20}, log)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("gateway.gc_percent applied over GOGC in the environment: %d", got)
	}
}
