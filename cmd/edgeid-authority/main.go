// Command edgeid-authority is the EdgeID cloud authority: the device
// registry, gateway enrollment, the signed sync feed and token issuance.
//
//	edgeid-authority serve --admin-token-file FILE [--listen :8443] [--url https://host:8443]
//	edgeid-authority gateway add NAME   (prints a one-time enrollment code)
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/internal/pki"
	"github.com/edgeid/edgeid/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:], nil)
	case "gateway":
		err = gatewayCmd(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeid-authority: "+err.Error())
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  edgeid-authority serve [flags]            run the authority
  edgeid-authority gateway add NAME         make a one-time enrollment code for a gateway
  edgeid-authority gateway list             list enrolled gateways
  edgeid-authority gateway remove NAME      stop syncing a gateway
run a command with -h for its flags
`)
	os.Exit(2)
}

func adminToken(file string) (string, error) {
	if t := os.Getenv("EDGEID_AUTHORITY_ADMIN_TOKEN"); t != "" {
		if len(t) < 16 {
			return "", errors.New("EDGEID_AUTHORITY_ADMIN_TOKEN: use at least 16 characters")
		}
		return t, nil
	}
	if file == "" {
		return "", errors.New("admin token: set EDGEID_AUTHORITY_ADMIN_TOKEN or --admin-token-file")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin token in %s: use at least 16 characters", file)
	}
	return t, nil
}

// Ready is what a started authority tells its caller (tests, the demo).
type Ready struct {
	URL         string
	Fingerprint string
	Authority   *authority.Authority
}

func serve(ctx context.Context, args []string, ready func(Ready)) error {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	listen := fs.String("listen", ":8443", "HTTPS listen address")
	url := fs.String("url", "", "public base URL, the iss of its tokens (default https://localhost:<port>)")
	stateDir := fs.String("state-dir", "/var/lib/edgeid-authority", "state directory (Badger store, keys, TLS)")
	tokFile := fs.String("admin-token-file", "", "file holding the admin API bearer token (or EDGEID_AUTHORITY_ADMIN_TOKEN)")
	certFile := fs.String("tls-cert", "", "TLS certificate (PEM); empty: a self-signed one kept in the state directory")
	keyFile := fs.String("tls-key", "", "TLS key (PEM)")
	audience := fs.String("token-audience", "edgeid", "aud of the device tokens it issues (the gateways' auth.audiences)")
	ahead := fs.Duration("key-publish-ahead", time.Hour, "how long a rotated token key is published before it signs")
	maxLife := fs.Duration("max-token-lifetime", 24*time.Hour, "the gateways' auth.max_token_lifetime (how long revocations are kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, err := adminToken(*tokFile)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if *url == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		*url = "https://localhost:" + port
	}
	var cert tls.Certificate
	fp := ""
	if *certFile != "" {
		if cert, err = tls.LoadX509KeyPair(*certFile, *keyFile); err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		fp = pki.Fingerprint(cert.Certificate[0])
	} else if cert, fp, err = pki.SelfSigned(filepath.Join(*stateDir, "tls"), "localhost"); err != nil {
		return err
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(*stateDir, "store"), Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	a, err := authority.New(authority.Config{URL: *url, StateDir: *stateDir, TokenAudience: *audience,
		TokenTTL: time.Hour, MaxTokenLifetime: *maxLife, EnrollCodeTTL: 24 * time.Hour, KeyPublishAhead: *ahead}, st, log)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: authority.NewHandler(a, tok), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	log.Info("authority ready", "url", *url, "tls_sha256", fp, "epoch", a.Epoch())
	fmt.Printf("edgeid-authority at %s\nTLS certificate sha256 %s (gateways pin it: edgeid enroll --fingerprint %s)\n", *url, fp, fp)
	if ready != nil {
		ready(Ready{URL: *url, Fingerprint: fp, Authority: a})
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	a.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func gatewayCmd(ctx context.Context, args []string) error {
	fs := pflag.NewFlagSet("gateway", pflag.ContinueOnError)
	url := fs.String("url", "https://localhost:8443", "the authority's base URL")
	fp := fs.String("fingerprint", "", "the authority's TLS certificate sha256 (for a self-signed authority)")
	tokFile := fs.String("admin-token-file", "", "file holding the admin token (or EDGEID_AUTHORITY_ADMIN_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok, err := adminToken(*tokFile)
	if err != nil {
		return err
	}
	c := client.HTTPClient(*fp)
	call := func(method, path string, in any) ([]byte, error) {
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*url, "/")+path, body)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
		}
		return data, nil
	}
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "add":
		data, err := call(http.MethodPost, "/admin/v1/gateways", map[string]string{"name": fs.Arg(1)})
		if err != nil {
			return err
		}
		var r struct {
			Code    string    `json:"code"`
			Expires time.Time `json:"expires"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		fmt.Printf("enrollment code for %s (one use, until %s):\n  %s\non the gateway:\n  edgeid enroll --authority %s --code %s", fs.Arg(1), r.Expires.Format(time.RFC3339), r.Code, *url, r.Code)
		if *fp != "" {
			fmt.Printf(" --fingerprint %s", *fp)
		}
		fmt.Println()
		return nil
	case fs.NArg() == 1 && fs.Arg(0) == "list":
		data, err := call(http.MethodGet, "/admin/v1/gateways", nil)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(data)
		return err
	case fs.NArg() == 2 && fs.Arg(0) == "remove":
		_, err := call(http.MethodDelete, "/admin/v1/gateways/"+fs.Arg(1), nil)
		return err
	}
	return errors.New("usage: edgeid-authority gateway add NAME | list | remove NAME")
}
