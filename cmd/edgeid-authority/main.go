// Command edgeid-authority is the EdgeID cloud authority: the device
// registry, gateway enrollment, the signed sync feed and token issuance.
//
//	edgeid-authority serve [--config FILE] [--listen :8443] [--url https://host:8443] [--admin-token-file FILE] ...
//	edgeid-authority check-config [--config FILE] [flags]   (validates, prints the effective configuration)
//	edgeid-authority migrate [--config FILE] [flags]   (creates or upgrades the storage's schema)
//	edgeid-authority gateway add NAME   (prints a one-time enrollment code)
//	edgeid-authority admin-key add NAME | list | revoke NAME   (named admin API keys)
//
// The configuration (config.go) comes from flags, EDGEID_AUTHORITY_*
// variables, the YAML file (default /etc/edgeid-authority/authority.yaml)
// and defaults, in that order of precedence.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/cloudsync/client"
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
	case "check-config":
		err = checkConfig(os.Args[2:], os.Stdout)
	case "migrate":
		err = migrateCmd(ctx, os.Args[2:], os.Stdout)
	case "gateway":
		err = gatewayCmd(ctx, os.Args[2:])
	case "admin-key":
		err = adminKeyCmd(ctx, os.Args[2:], os.Stdout)
	default:
		usage()
	}
	if errors.Is(err, pflag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeid-authority: "+err.Error())
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  edgeid-authority serve [flags]            run the authority
  edgeid-authority check-config [flags]     validate the configuration and print it (no secrets)
  edgeid-authority migrate [flags]          create or upgrade the storage's schema (postgres: before starting replicas)
  edgeid-authority gateway add NAME [--site SITE]  make a one-time enrollment code for a gateway (of a site)
  edgeid-authority gateway list             list enrolled gateways
  edgeid-authority gateway remove NAME      stop syncing a gateway
  edgeid-authority admin-key add NAME       make a named admin API key (printed once)
  edgeid-authority admin-key list           list admin keys: name, created, by whom, last used
  edgeid-authority admin-key revoke NAME    refuse an admin key from now on
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
		return "", errors.New("admin token: set EDGEID_AUTHORITY_ADMIN_TOKEN, or admin_token_file (--admin-token-file) to a file holding it")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin_token_file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("admin_token_file: the token in %s is too short; use at least 16 characters", file)
	}
	return t, nil
}

// adminTokenSource says where the admin token comes from, never what it is.
func adminTokenSource(file string) string {
	if os.Getenv("EDGEID_AUTHORITY_ADMIN_TOKEN") != "" {
		return "from EDGEID_AUTHORITY_ADMIN_TOKEN (admin_token_file is not read)"
	}
	return "read from " + file
}

// checkConfig loads the configuration as serve would (same flags), checks
// that the admin token can be read, and prints the effective configuration
// with where each value came from. It prints no secret.
func checkConfig(args []string, out io.Writer) error {
	l, err := loadArgs("check-config", args)
	if err != nil {
		return err
	}
	if _, err := adminToken(l.cfg.AdminTokenFile); err != nil {
		return err
	}
	fmt.Fprintf(out, "# %s: valid\n", orDefaults(l.path))
	if err := writeConfig(out, l.cfg, l.v, l.fs); err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "# admin token: %s, not shown\n", adminTokenSource(l.cfg.AdminTokenFile))
	return err
}

// adminClient is a client of the admin API: the flags that say where the
// authority is and which admin key to use, and call, which sends a request
// with that key and returns the answer's body (an error for any status
// but 2xx, with the answer).
type adminClient struct {
	fs      *pflag.FlagSet
	url     *string
	fp      *string
	tokFile *string
	call    func(method, path string, in any) ([]byte, error)
}

func newAdminClient(ctx context.Context, name string) *adminClient {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	c := &adminClient{fs: fs,
		url:     fs.String("url", "https://localhost:8443", "the authority's base URL"),
		fp:      fs.String("fingerprint", "", "the authority's TLS certificate sha256 (for a self-signed authority)"),
		tokFile: fs.String("admin-token-file", "", "file holding an admin key or the admin token (or EDGEID_AUTHORITY_ADMIN_TOKEN)"),
	}
	c.call = func(method, path string, in any) ([]byte, error) {
		tok, err := adminToken(*c.tokFile)
		if err != nil {
			return nil, err
		}
		var body io.Reader
		if in != nil {
			b, _ := json.Marshal(in)
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(*c.url, "/")+path, body)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.HTTPClient(*c.fp).Do(req)
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
	return c
}

func gatewayCmd(ctx context.Context, args []string) error {
	c := newAdminClient(ctx, "gateway")
	fs, url, fp, call := c.fs, c.url, c.fp, c.call
	site := fs.String("site", "", "gateway add: the site the gateway serves (it is fed that site's records only; empty: every record)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "add":
		data, err := call(http.MethodPost, "/admin/v1/gateways", map[string]string{"name": fs.Arg(1), "site": *site})
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
	return errors.New("usage: edgeid-authority gateway add NAME [--site SITE] | list | remove NAME")
}
