package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/sysd"
)

// setGCPercent gives the collector gateway.gc_percent, unless GOGC is set in
// the environment (an operator's override, as for any Go program).
func setGCPercent(c config.Gateway, log *slog.Logger) {
	if v := os.Getenv("GOGC"); v != "" { // empty is Go's default, not an override
		log.Info("GOGC is set in the environment; gateway.gc_percent is not applied", "GOGC", v, "gc_percent", c.GCPercent)
		return
	}
	debug.SetGCPercent(c.GCPercent)
}

// logLevel is changed by SIGHUP without a restart.
var logLevel = new(slog.LevelVar)

// newLogger logs to journald with structured fields when systemd started us
// (JOURNAL_STREAM), else as text or JSON on stderr.
func newLogger(c config.Log, gateway string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	logLevel.Set(lvl)
	opts := &slog.HandlerOptions{Level: logLevel}
	var h slog.Handler
	switch {
	case sysd.UseJournal():
		h = sysd.NewJournalHandler(logLevel)
	case c.Format == "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h).With("gateway", gateway)
}

func runServe(ctx context.Context, args []string) error {
	fs, path := configFlags("serve", configUsage)
	demoMode := fs.Bool("demo", false, "run the embedded demo: an authority, this gateway enrolled to it, demo devices and an owner, and how to use them")
	demoAuthority := fs.String("demo-authority", defaultDemoAuthority, "with --demo: the demo authority's HTTPS listen address")
	fs.String("state-dir", "", "state directory (state_dir)")
	fs.String("mqtt-tcp", "", "plain MQTT listen address (mqtt.tcp)")
	fs.String("admin-socket", "", "admin API unix socket (admin.socket)")
	fs.String("log-level", "", "debug, info, warn or error (log.level)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	v := viper.New()
	for flag, key := range map[string]string{"state-dir": "state_dir", "mqtt-tcp": "mqtt.tcp", "admin-socket": "admin.socket", "log-level": "log.level"} {
		if f := fs.Lookup(flag); f.Changed {
			if err := v.BindPFlag(key, f); err != nil {
				return err
			}
		}
	}
	if *demoMode {
		return serveDemo(ctx, v, os.Stdout, demoOptions{AuthorityListen: *demoAuthority})
	}
	cfg, err := config.Load(v, *path)
	if err != nil {
		return err
	}
	reload := func() (config.Config, error) { return config.Load(v, *path) }
	return serve(ctx, cfg, reload, nil)
}

// serve runs the gateway until ctx ends: READY once listeners and store are
// up, STATUS every few seconds, the watchdog while healthy, SIGHUP reloads
// what can change without a restart, STOPPING and a clean close at the end.
func serve(ctx context.Context, cfg config.Config, reload func() (config.Config, error), ready func(*edge.Gateway) error) error {
	log := newLogger(cfg.Log, cfg.Gateway.ID)
	setGCPercent(cfg.Gateway, log)
	g, err := edge.New(cfg, log)
	if err != nil {
		return err
	}
	if err := g.Start(ctx); err != nil {
		g.Close()
		return err
	}
	if ready != nil {
		if err := ready(g); err != nil {
			g.Close()
			return err
		}
	}
	sysd.Ready(g.StatusLine())
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go sysd.Watchdog(wctx, log, g.Healthy)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			sysd.Status(g.StatusLine())
		case <-hup:
			sysd.Reloading()
			if reload != nil {
				if nc, err := reload(); err != nil {
					log.Error("reload refused; keeping the running configuration", "err", err)
				} else {
					var lvl slog.Level
					_ = lvl.UnmarshalText([]byte(nc.Log.Level))
					logLevel.Set(lvl)
					setGCPercent(nc.Gateway, log)
					log.Info("configuration reloaded", "log_level", nc.Log.Level, "gc_percent", nc.Gateway.GCPercent,
						"note", "listeners, store and auth settings change on restart")
				}
			}
			sysd.Ready(g.StatusLine())
		}
	}
	sysd.Stopping()
	log.Info("stopping", "reason", context.Cause(ctx))
	return g.Close()
}
