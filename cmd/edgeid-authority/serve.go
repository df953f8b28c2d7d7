package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/sysd"
	"github.com/edgeid/edgeid/internal/pki"
)

// Ready is what a started authority tells its caller (tests, the demo).
type Ready struct {
	URL         string
	Fingerprint string
	Authority   *authority.Authority
	// MetricsAddr is where /metrics and /healthz answer over plain HTTP;
	// "" when metrics are off.
	MetricsAddr string
}

// loadArgs parses a command's flags and loads the configuration: flags over
// EDGEID_AUTHORITY_* over the file over the defaults.
func loadArgs(name string, args []string) (loaded, error) {
	fs, path := configFlags(name)
	if err := fs.Parse(args); err != nil {
		return loaded{}, err
	}
	if fs.NArg() > 0 {
		return loaded{}, fmt.Errorf("%s takes no arguments, only flags (got %q)", name, fs.Args())
	}
	l := loaded{v: viper.New(), fs: fs}
	if err := bindFlags(l.v, fs); err != nil {
		return loaded{}, err
	}
	var err error
	l.cfg, l.path, err = Load(l.v, *path)
	return l, err
}

// loaded is a configuration and where its values came from.
type loaded struct {
	cfg  Config
	path string // the file read, "" for none
	v    *viper.Viper
	fs   *pflag.FlagSet
}

func serve(ctx context.Context, args []string, ready func(Ready)) error {
	l, err := loadArgs("serve", args)
	if err != nil {
		return err
	}
	return run(ctx, l.cfg, os.Stderr, ready)
}

// run serves cfg until ctx ends: the API on cfg.Listen behind /healthz and
// the request counts, /metrics on cfg.MetricsListen, READY to systemd once
// both listen, STOPPING and a clean close at the end.
func run(ctx context.Context, cfg Config, stderr io.Writer, ready func(Ready)) error {
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	tok, err := adminToken(cfg.AdminTokenFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	url := cfg.URL
	if url == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		url = "https://localhost:" + port
	}
	var cert tls.Certificate
	fp := ""
	if cfg.TLSCert != "" {
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return fmt.Errorf("tls_cert/tls_key: %w", err)
		}
		fp = pki.Fingerprint(cert.Certificate[0])
	} else if cert, fp, err = pki.SelfSigned(filepath.Join(cfg.StateDir, "tls"), "localhost"); err != nil {
		return err
	}
	st, closeStorage, err := openStorage(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeStorage()

	a, err := authority.New(cfg.Authority(url), st, log)
	if err != nil {
		return err
	}
	defer a.Close()
	var m *metrics
	errc := make(chan error, 2)
	metricsAddr := ""
	var msrv *http.Server
	if cfg.Metrics {
		m = newMetrics(a, log)
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
		metricsAddr = mln.Addr().String()
		if !mln.Addr().(*net.TCPAddr).IP.IsLoopback() {
			log.Warn("metrics are served without authentication beyond loopback; keep metrics_listen on a trusted network", "metrics_listen", metricsAddr)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", m.handler(log))
		mux.Handle("/healthz", healthz(a))
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
	}
	srv := &http.Server{Handler: ops{next: authority.NewHandler(a, tok), a: a, m: m}, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	log.Info("authority ready", "url", url, "listen", ln.Addr().String(), "metrics", metricsAddr, "tls_sha256", fp, "epoch", a.Epoch())
	fmt.Printf("edgeid-authority at %s\nTLS certificate sha256 %s (gateways pin it: edgeid enroll --fingerprint %s)\n", url, fp, fp)
	if ready != nil {
		ready(Ready{URL: url, Fingerprint: fp, Authority: a, MetricsAddr: metricsAddr})
	}
	sysd.Ready("serving " + url)
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go sysd.Watchdog(wctx, log, func(context.Context) error { _, err := st.Rev(); return err })

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	sysd.Stopping()
	log.Info("stopping", "reason", context.Cause(ctx))
	a.Close() // ends the event streams, which Shutdown would wait for
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if msrv != nil {
		err = errors.Join(err, msrv.Shutdown(sctx))
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return err
}
