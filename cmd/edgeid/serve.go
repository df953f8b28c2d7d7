package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/edge/sysd"
	"github.com/edgeid/edgeid/store"
)

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
	demoMode := fs.Bool("demo", false, "run the embedded demo: a local issuer, demo devices, and how to connect them")
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
		return serveDemo(ctx, v, os.Stdout)
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
					log.Info("configuration reloaded", "log_level", nc.Log.Level, "note", "listeners, store and auth settings change on restart")
				}
			}
			sysd.Ready(g.StatusLine())
		}
	}
	sysd.Stopping()
	log.Info("stopping", "reason", context.Cause(ctx))
	return g.Close()
}

// serveDemo runs the gateway on a throwaway state directory with a local
// issuer and demo devices, and prints how to connect each one.
func serveDemo(ctx context.Context, v *viper.Viper, out io.Writer) error {
	dir := filepath.Join(os.TempDir(), "edgeid-demo")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	files, err := demo.WriteTLS(filepath.Join(dir, "tls"), "thermo-2")
	if err != nil {
		return fmt.Errorf("demo certificates: %w", err)
	}
	v.SetDefault("gateway.id", "demo-gateway")
	v.SetDefault("state_dir", filepath.Join(dir, "state"))
	v.SetDefault("mqtt.tcp", "127.0.0.1:1883")
	v.SetDefault("mqtt.tls.listen", "127.0.0.1:8883")
	v.SetDefault("mqtt.tls.cert", files.ServerCert)
	v.SetDefault("mqtt.tls.key", files.ServerKey)
	v.SetDefault("admin.socket", filepath.Join(dir, "admin.sock"))
	v.SetDefault("coap.dtls_listen", "127.0.0.1:5684")
	v.SetDefault("http.listen", "127.0.0.1:8443")
	cfg, err := config.Load(v, "")
	if err != nil {
		return err
	}
	iss, err := demo.NewIssuer("https://demo.edgeid.local", "demo-1")
	if err != nil {
		return err
	}
	bundle, err := demo.Bundle(iss, files.DeviceFingerprint)
	if err != nil {
		return err
	}
	// thermo-3 is a CoAP thermostat with a pre-shared key, new every run.
	psk := make([]byte, 16)
	if _, err := rand.Read(psk); err != nil {
		return err
	}
	key := hex.EncodeToString(psk)
	bundle.Devices = append(bundle.Devices, store.Device{ID: "thermo-3", Name: "CoAP thermostat", Class: "thermostat", Owner: "alice",
		Status: store.DeviceActive, PSKIdentity: "thermo-3", PSK: []byte(key)})
	return serve(ctx, cfg, nil, func(g *edge.Gateway) error {
		if _, err := g.Store.Apply(bundle, nil); err != nil {
			return fmt.Errorf("demo bundle: %w", err)
		}
		return printDemo(out, g, cfg, iss, files, key)
	})
}

func printDemo(out io.Writer, g *edge.Gateway, cfg config.Config, iss *demo.Issuer, f demo.Files, pskKey string) error {
	classes := map[string]store.DeviceClass{}
	for _, c := range demo.Classes() {
		classes[c.Name] = c
	}
	mint := func(device, sub, class string) (string, error) {
		scope := demo.Scope(classes[class], device, "alice")
		return iss.Mint(iss.Claims(device, sub, cfg.Auth.Audiences[0], scope, 12*time.Hour), nil)
	}
	t1, err := mint("thermo-1", "alice", "thermostat")
	if err != nil {
		return err
	}
	svc, err := mint("acme-cloud", "acme-cloud", "service")
	if err != nil {
		return err
	}
	host, port := splitAddr(g.Addr("tcp"))
	thost, tport := splitAddr(g.Addr("tls"))
	var b strings.Builder
	fmt.Fprintf(&b, "\nEdgeID demo gateway is up (MQTT %s, TLS %s, admin socket %s).\n", g.Addr("tcp"), g.Addr("tls"), cfg.Admin.Socket)
	fmt.Fprintf(&b, "Demo credentials below are valid for 12 hours and only for this run.\n\n")
	fmt.Fprintf(&b, "# acme-cloud (service, token as password, MQTT 5): receive every thermostat's telemetry\n")
	fmt.Fprintf(&b, "mosquitto_sub -h %s -p %s -V 5 -i acme-cloud -u acme-cloud -P '%s' -t 'devices/+/telemetry/#' -v\n\n", host, port, svc)
	fmt.Fprintf(&b, "# thermo-1 (token as password, MQTT 3.1.1): publish a reading\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s -V mqttv311 -i thermo-1 -u thermo-1 -P '%s' -t devices/thermo-1/telemetry/temp -m 21.5\n\n", host, port, t1)
	fmt.Fprintf(&b, "# thermo-1 refused: another device's topic (PUBACK 0x87 Not authorized)\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s -V 5 -q 1 -i thermo-1 -u thermo-1 -P '%s' -t devices/thermo-2/telemetry/temp -m 99\n\n", host, port, t1)
	fmt.Fprintf(&b, "# thermo-2 (client certificate over TLS, no token): publish a reading\n")
	fmt.Fprintf(&b, "mosquitto_pub -h %s -p %s --cafile %s --cert %s --key %s -i thermo-2 -t devices/thermo-2/telemetry/temp -m 19.0\n\n", thost, tport, f.CACert, f.DeviceCert, f.DeviceKey)
	if g.CoAP != nil && g.CoAP.Addr() != "" {
		caddr := g.CoAP.Addr()
		fmt.Fprintf(&b, "# thermo-3 (CoAP over DTLS, pre-shared key; Debian's libcoap3-bin): publish a reading, then observe its setpoint\n")
		fmt.Fprintf(&b, "coap-client-openssl -m put -u thermo-3 -k %s -e 20.5 coaps://%s/ps/devices/thermo-3/telemetry/temp\n", pskKey, caddr)
		fmt.Fprintf(&b, "coap-client-openssl -s 60 -u thermo-3 -k %s coaps://%s/ps/devices/thermo-3/commands/setpoint\n\n", pskKey, caddr)
		fmt.Fprintf(&b, "# thermo-2 over CoAP with its client certificate\n")
		fmt.Fprintf(&b, "coap-client-openssl -m put -c %s -j %s -C %s -e 19.5 coaps://%s/ps/devices/thermo-2/telemetry/temp\n\n", f.DeviceCert, f.DeviceKey, f.CACert, caddr)
	}
	if g.HTTP != nil {
		haddr := g.HTTP.Addr()
		fmt.Fprintf(&b, "# HTTPS (curl): thermo-1 publishes with its token as a Bearer; acme-cloud reads it back, then subscribes (server-sent events)\n")
		fmt.Fprintf(&b, "curl --cacert %s -H 'Authorization: Bearer %s' --data 21.7 'https://%s/v1/topics/devices/thermo-1/telemetry/temp?retain=1'\n", f.CACert, t1, haddr)
		fmt.Fprintf(&b, "curl --cacert %s -H 'Authorization: Bearer %s' https://%s/v1/topics/devices/thermo-1/telemetry/temp\n", f.CACert, svc, haddr)
		fmt.Fprintf(&b, "curl -N --cacert %s -H 'Accept: text/event-stream' -H 'Authorization: Bearer %s' 'https://%s/v1/topics/devices/+/telemetry/%%23'\n\n", f.CACert, svc, haddr)
	}
	fmt.Fprintf(&b, "# technician: sessions, kick\n")
	fmt.Fprintf(&b, "go run ./cmd/edgeid sessions --socket %s\n", cfg.Admin.Socket)
	fmt.Fprintf(&b, "go run ./cmd/edgeid kick --socket %s --device thermo-1\n\n", cfg.Admin.Socket)
	_, err = io.WriteString(out, b.String())
	return err
}

func splitAddr(a string) (string, string) {
	i := strings.LastIndex(a, ":")
	if i < 0 {
		return a, ""
	}
	return a[:i], a[i+1:]
}
