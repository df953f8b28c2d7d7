// Package pgstore keeps the authority's registry, change log and documents
// in PostgreSQL: the shared implementation of the authority's storage
// (cloudsync/authority.Storage), for any number of replicas on one
// database. It has the Badger store's semantics (store.Store) and uses its
// validation and formats (store/export.go); the conformance suite
// cloudsync/authority/storagetest holds both to them.
//
// Every commit takes the row lock of the one-row table head first, so
// commits of every process are serialised: each reads the state the
// previous one left, and its revision is the next one, with no gap.
// Commits notify the channel edgeid_changes with their rev; each Store
// listens on a connection of its own and tells its watchers of other
// processes' commits.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeid/edgeid/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel is where commits announce their rev.
const notifyChannel = "edgeid_changes"

// DefaultMaxConns is the pool size when none is given: every gateway
// stream reads the log after each commit, and pgx's own default (4, or
// the CPUs) queued them: with 1,000 streams a token revocation's p99 went
// from 1,294 to 683 ms at 16 (docs/BENCHMARKS.md, fleet scale).
const DefaultMaxConns = 16

// Options tunes the store; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// Timeout bounds each call (a commit with its retries, a read); 30 s
	// when 0.
	Timeout time.Duration
	// MaxConns is the size of the connection pool (the listener has one
	// more of its own); DefaultMaxConns when 0 and the dsn sets no
	// pool_max_conns.
	MaxConns int32
	// SweepEvery is how often a commit also deletes the revocations past
	// their expiry (reads never see them anyway); one minute when 0.
	SweepEvery time.Duration
}

// Store is the authority's storage in PostgreSQL. Its methods are safe for
// concurrent use, from any number of processes on the same database.
type Store struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	timeout time.Duration
	sweep   time.Duration

	// ctx ends with Close: the interface's calls take no context, so each
	// runs under this one, with the timeout.
	ctx       context.Context
	cancel    context.CancelFunc
	listening chan struct{} // closed when the listener has stopped
	closeOnce sync.Once

	// commitMu makes this process's commits one at a time, each told to
	// the watchers before the next starts; the listener holds it too, so
	// it tells of a commit of another process only between two of ours.
	// (Commits wait on head's row lock anyway: this costs no concurrency.)
	commitMu  sync.Mutex
	lastSweep time.Time // under commitMu

	watchMu  sync.Mutex
	watchers []func(store.Applied)
	told     uint64 // the last rev the watchers were told of
}

// Open connects to the database dsn names (a PostgreSQL URL or key=value
// string), checks that its schema is SchemaVersion (else an ErrSchema
// telling the operator to run edgeid-authority migrate) and starts
// listening for other processes' commits. ctx bounds the opening only.
func Open(ctx context.Context, dsn string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	switch {
	case o.MaxConns > 0:
		cfg.MaxConns = o.MaxConns
	case !strings.Contains(dsn, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	if err := checkSchema(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &Store{pool: pool, log: o.Logger, timeout: o.Timeout, sweep: o.SweepEvery,
		ctx: sctx, cancel: cancel, listening: make(chan struct{})}
	// Listening before the rev is read: a commit made between the two is
	// either in the rev or notified.
	conn, err := s.connectListener(ctx)
	if err != nil {
		cancel()
		pool.Close()
		return nil, err
	}
	if s.told, err = s.rev(ctx); err != nil {
		cancel()
		_ = conn.Close(ctx)
		pool.Close()
		return nil, err
	}
	go s.listen(conn)
	return s, nil
}

// Close stops the listener and closes the connections. Calls made after it
// fail.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.listening
		s.pool.Close()
	})
}

// call is the context of one call: the store's, with the timeout.
func (s *Store) call() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.timeout)
}

// Watch registers fn to run, in order, after each commit: with the batch
// (store.Applied's Rev, Batch and Previous) for this Store's own, and with
// the Rev alone for those of other processes, once each. Like the Badger
// store's, a watcher must not commit nor Watch.
func (s *Store) Watch(fn func(store.Applied)) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// tell runs the watchers for a (the caller holds commitMu), after telling
// them, by rev alone, of the revs between the last told and a's: commits of
// other processes whose notification has not come yet. So each rev is told
// once, in order; a rev already told (a notification of a commit told
// with its batch) is not told again.
func (s *Store) tell(a store.Applied) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for r := s.told + 1; r < a.Rev; r++ {
		for _, w := range s.watchers {
			w(store.Applied{Rev: r})
		}
	}
	if a.Rev <= s.told {
		return
	}
	s.told = a.Rev
	for _, w := range s.watchers {
		w(a)
	}
}

// Listener backoff after the connection is lost.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("pgstore: listener: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("pgstore: listener: %w", err)
	}
	return conn, nil
}

// listen tells the watchers of each rev notified, on conn, and on a new
// connection (after a backoff) when conn fails, until Close.
func (s *Store) listen(conn *pgx.Conn) {
	defer close(s.listening)
	backoff := minBackoff
	for {
		if conn == nil {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			var err error
			if conn, err = s.connectListener(s.ctx); err != nil {
				if s.ctx.Err() == nil {
					s.log.Warn("pgstore: change listener: reconnecting", "err", err, "retry_in", backoff)
				}
				continue
			}
			backoff = minBackoff
			s.log.Info("pgstore: change listener reconnected")
			// Commits notified while no one listened: tell of them now,
			// or a stream waiting for the next change sleeps until another.
			s.catchUp()
		}
		n, err := conn.WaitForNotification(s.ctx)
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			conn = nil
			if s.ctx.Err() != nil {
				return
			}
			s.log.Warn("pgstore: change listener lost its connection", "err", err)
			continue
		}
		rev, err := strconv.ParseUint(n.Payload, 10, 64)
		if err != nil {
			s.log.Warn("pgstore: change listener: a notification that is not a rev", "payload", n.Payload)
			continue
		}
		s.commitMu.Lock()
		s.tell(store.Applied{Rev: rev})
		s.commitMu.Unlock()
	}
}

// catchUp tells the watchers of the revs committed up to now.
func (s *Store) catchUp() {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	ctx, cancel := s.call()
	defer cancel()
	rev, err := s.rev(ctx)
	if err != nil {
		s.log.Warn("pgstore: change listener: read the rev", "err", err)
		return
	}
	s.tell(store.Applied{Rev: rev})
}

func (s *Store) rev(ctx context.Context) (uint64, error) {
	var rev int64
	if err := s.pool.QueryRow(ctx, `SELECT rev FROM head`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("pgstore: read rev: %w", err)
	}
	return uint64(rev), nil
}

// Rev is the last committed revision.
func (s *Store) Rev() (uint64, error) {
	ctx, cancel := s.call()
	defer cancel()
	return s.rev(ctx)
}

// isNoRows reports a query that found nothing.
func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
