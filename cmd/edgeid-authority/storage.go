package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/store"
	"github.com/edgeid/edgeid/store/pgstore"
)

// openStorage opens the configured storage: the embedded Badger store
// (with its value-log GC running until closed) or the shared PostgreSQL
// database. closeFn stops what it started and closes it.
func openStorage(ctx context.Context, cfg Config, log *slog.Logger) (st authority.Storage, closeFn func(), err error) {
	switch cfg.Storage {
	case "postgres":
		o := pgstore.Options{Logger: log}
		if cfg.Postgres.MaxConns != "" {
			n, _ := strconv.Atoi(cfg.Postgres.MaxConns) // validated
			o.MaxConns = int32(n)
		}
		pg, err := pgstore.Open(ctx, cfg.Postgres.DSN, o)
		if err != nil {
			return nil, nil, fmt.Errorf("storage postgres (%s): %w", RedactDSN(cfg.Postgres.DSN), err)
		}
		log.Info("storage: postgres", "dsn", RedactDSN(cfg.Postgres.DSN))
		return pg, pg.Close, nil
	default:
		dir := filepath.Join(cfg.StateDir, "store")
		b, err := store.Open(store.Options{Dir: dir, Logger: log})
		if err != nil {
			return nil, nil, err
		}
		var wg sync.WaitGroup
		gcCtx, stopGC := context.WithCancel(context.Background())
		wg.Add(1)
		go func() { defer wg.Done(); b.RunGC(gcCtx, 10*time.Minute) }()
		return b, func() { stopGC(); wg.Wait(); _ = b.Close() }, nil
	}
}

// migrateCmd creates or upgrades the storage's schema: PostgreSQL's
// tables (run it once, from one host, before starting replicas of a new
// version); a Badger store upgrades itself when opened, which this does.
func migrateCmd(ctx context.Context, args []string, w io.Writer) error {
	l, err := loadArgs("migrate", args)
	if err != nil {
		return err
	}
	cfg := l.cfg
	switch cfg.Storage {
	case "postgres":
		if err := pgstore.Migrate(ctx, cfg.Postgres.DSN); err != nil {
			return fmt.Errorf("migrate postgres (%s): %w", RedactDSN(cfg.Postgres.DSN), err)
		}
		_, err = fmt.Fprintf(w, "postgres %s: schema version %d\n", RedactDSN(cfg.Postgres.DSN), pgstore.SchemaVersion)
		return err
	default:
		dir := filepath.Join(cfg.StateDir, "store")
		b, err := store.Open(store.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(w, nil))})
		if err != nil {
			return fmt.Errorf("migrate badger %s: %w", dir, err)
		}
		if err := b.Close(); err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "badger %s: schema version %d\n", dir, store.SchemaVersion)
		return err
	}
}
