package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
	"github.com/edgeid/edgeid/hw"
)

// runEnroll registers this gateway with an authority using a one-time code
// and keeps the result (its key, the pinned feed key) for `edgeid serve`.
func runEnroll(ctx context.Context, args []string) error {
	fs, path := configFlags("enroll", "configuration file (for state_dir and sync.enrollment)")
	authority := fs.String("authority", "", "the authority's base URL, e.g. https://authority.example.com:8443")
	code := fs.String("code", "", "the one-time code from edgeid-authority gateway add")
	fp := fs.String("fingerprint", "", "the authority's TLS certificate sha256, when it is self-signed")
	hardware := fs.String("hardware", "", "board serial number to register (default: read from the board)")
	force := fs.Bool("force", false, "replace an existing enrollment")
	fs.String("state-dir", "", "state directory (state_dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *authority == "" || *code == "" {
		return errors.New("usage: edgeid enroll --authority URL --code CODE [--fingerprint SHA256]")
	}
	v := viper.New()
	if f := fs.Lookup("state-dir"); f.Changed {
		_ = v.BindPFlag("state_dir", f)
	}
	cfg, err := config.Load(v, *path)
	if err != nil {
		return err
	}
	dest := edge.EnrollmentPath(cfg)
	if _, err := os.Stat(dest); err == nil && !*force {
		return fmt.Errorf("already enrolled (%s); use --force to enroll again", dest)
	}
	if *hardware == "" {
		*hardware, _ = hw.Serial("") // the board's serial (Pi, device tree, DMI, machine-id)
	}
	e, err := client.Enroll(ctx, *authority, *fp, *code, *hardware)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return err
	}
	if err := e.Save(dest); err != nil {
		return err
	}
	// The technician runs this as root; the daemon runs as the owner of the
	// state directory (user edgeid) and must be able to read its key.
	if fi, err := os.Stat(cfg.StateDir); err == nil && os.Geteuid() == 0 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if err := os.Chown(dest, int(st.Uid), int(st.Gid)); err != nil {
				return fmt.Errorf("give %s to the daemon's user: %w", dest, err)
			}
		}
	}
	return printf("enrolled as gateway %q with %s; restart edgeid (systemctl restart edgeid) to start syncing\n", e.Gateway, e.Authority)
}
