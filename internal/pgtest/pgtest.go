// Package pgtest runs a real PostgreSQL for tests: one throwaway server per
// test binary, started on first use, and a fresh empty database for each
// test that asks (DSN).
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.DSN(t) // skips the test when PostgreSQL is not installed
//		...
//	}
//
// The server listens only on a unix socket in its own temporary directory
// (no TCP port to collide on), with durability off (fsync,
// synchronous_commit, full_page_writes) for speed. As root it runs as the
// postgres user, or nobody (PostgreSQL refuses to run as root). When the
// binaries are absent DSN skips the test, or fails it when the environment
// variable CI is set: CI must not pass by skipping.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// server is the one server of this test binary.
type server struct {
	dir      string // the temporary directory: data/, the socket, the log
	bin      string // where initdb and pg_ctl are
	cred     *syscall.Credential
	watchdog *exec.Cmd
	lifeline *os.File // the watchdog's stdin: closing it (or dying) stops the server

	mu    sync.Mutex // one CREATE or DROP DATABASE at a time on admin
	admin *pgx.Conn
}

var (
	once    sync.Once
	srv     *server
	srvErr  error
	dbCount atomic.Int64
)

// errNoBinaries is the start error when PostgreSQL is not installed.
var errNoBinaries = errors.New("PostgreSQL binaries not found (apt install postgresql); skipping")

// Main runs the package's tests (call it from TestMain), then stops the
// server, if a test started one, and removes its directory.
func Main(m *testing.M) {
	code := m.Run()
	if srv != nil {
		srv.stop()
	}
	os.Exit(code)
}

// DSN returns the connection string of a new, empty database on the test
// binary's server (starting the server on first use), dropped when t ends.
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv, srvErr = start() })
	if !usable(t, srvErr) {
		return ""
	}
	name := fmt.Sprintf("t%d_%s", dbCount.Add(1), safeName.ReplaceAllString(strings.ToLower(t.Name()), "_"))
	if len(name) > 63 { // PostgreSQL's identifier limit
		name = name[:63]
	}
	if err := srv.exec(`CREATE DATABASE "` + name + `"`); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends connections a test left open (PostgreSQL 13+).
		if err := srv.exec(`DROP DATABASE IF EXISTS "` + name + `" WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return srv.dsn(name)
}

// usable skips t when PostgreSQL is not installed, unless CI is set, and
// fails it then or when the server did not start; it reports whether the
// server is there (t.Skip and t.Fatal do not return in a test).
func usable(t testing.TB, err error) bool {
	t.Helper()
	switch {
	case errors.Is(err, errNoBinaries) && os.Getenv("CI") == "":
		t.Skip(err.Error())
	case errors.Is(err, errNoBinaries):
		t.Fatalf("pgtest: %v (CI is set: these tests must run there)", err)
	case err != nil:
		t.Fatalf("pgtest: %v", err)
	default:
		return true
	}
	return false
}

var safeName = regexp.MustCompile(`[^a-z0-9_]+`)

func (s *server) dsn(db string) string {
	return fmt.Sprintf("host=%s port=5432 user=postgres dbname=%s sslmode=disable", s.dir, db)
}

func (s *server) exec(sql string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.admin.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// libGlob is where Debian installs each PostgreSQL version's programs.
var libGlob = "/usr/lib/postgresql/*/bin"

// findBinaries finds initdb and pg_ctl: on PATH, else in the newest
// /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH).
func findBinaries() (string, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if pgctl, err := exec.LookPath("pg_ctl"); err == nil {
			if _, err := exec.LookPath("postgres"); err == nil {
				if filepath.Dir(initdb) == filepath.Dir(pgctl) {
					return filepath.Dir(initdb), nil
				}
			}
		}
	}
	dirs, _ := filepath.Glob(libGlob)
	var found []string
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "initdb")); err == nil && !st.IsDir() {
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return "", errNoBinaries
	}
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(found, func(a, b string) int {
		va, vb := version(a), version(b)
		switch {
		case va < vb:
			return -1
		case va > vb:
			return 1
		}
		return 0
	})
	return found[len(found)-1], nil
}

// runAs is who the server runs as: as root, the postgres user if there is
// one, else nobody; as anyone else, themselves (nil).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, errors.New("running as root, and neither the postgres user nor nobody exists to run PostgreSQL as")
}

// command runs the program path (a PostgreSQL one: s.pg) as the server's user.
func (s *server) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = s.dir // a directory the server's user may enter
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// pg is the path of the PostgreSQL program name.
func (s *server) pg(name string) string { return filepath.Join(s.bin, name) }

// start initialises a cluster in a new temporary directory and starts it.
func start() (_ *server, err error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	// A unix socket path is limited to 107 bytes: keep it short.
	base := os.TempDir()
	if len(base) > 60 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, bin: bin, cred: cred}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.command(s.pg("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	// Test settings: the socket alone, and no durability (a crash loses a
	// throwaway database).
	conf := fmt.Sprintf(`
listen_addresses = ''
unix_socket_directories = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
`, dir)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := s.startWatchdog(data); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "server.log")
	if out, err := s.command(s.pg("pg_ctl"), "-D", data, "-l", logFile, "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s\nserver log %s:\n%s", err, out, logFile, log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.admin, err = pgx.Connect(ctx, s.dsn("postgres")); err != nil {
		log, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("connect: %v\nserver log %s:\n%s", err, logFile, log)
	}
	return s, nil
}

// startWatchdog starts a shell, as the server's user, that waits for its
// standard input to end, then stops the server and removes the directory.
// This process holds the other end: the server goes when the test binary
// does, however it ends (a panic or a timeout skips Main's stop too).
func (s *server) startWatchdog(data string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	script := `while read -r _; do :; done; "$0" -D "$1" -m immediate -w stop >/dev/null 2>&1; rm -rf "$2"`
	cmd := s.command("/bin/sh", "-c", script, s.pg("pg_ctl"), data, s.dir)
	cmd.Stdin = r
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // not killed by a ^C to the tests before it cleans up
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start the watchdog: %w", err)
	}
	r.Close()
	s.watchdog, s.lifeline = cmd, w
	return nil
}

// stop stops the server and removes its directory.
func (s *server) stop() {
	if s.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.admin.Close(ctx)
		cancel()
	}
	if s.lifeline != nil {
		s.lifeline.Close()
		_ = s.watchdog.Wait()
	}
	os.RemoveAll(s.dir)
}
