package pgtest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func fakeBin(t *testing.T, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// The programs come from PATH first, else from the newest Debian
// version directory; none at all is errNoBinaries.
func TestFindBinaries(t *testing.T) {
	root := t.TempDir()
	defer func(g string) { libGlob = g }(libGlob)
	libGlob = filepath.Join(root, "lib", "*", "bin")
	onPath := filepath.Join(root, "path")
	fakeBin(t, onPath, "initdb", "pg_ctl", "postgres")
	t.Setenv("PATH", onPath)
	if got, err := findBinaries(); err != nil || got != onPath {
		t.Fatalf("with the programs on PATH: %q, %v", got, err)
	}
	t.Setenv("PATH", filepath.Join(root, "empty"))
	if _, err := findBinaries(); !errors.Is(err, errNoBinaries) {
		t.Fatalf("with no programs: %v", err)
	}
	for _, v := range []string{"9.6", "15", "13"} {
		fakeBin(t, filepath.Join(root, "lib", v, "bin"), "initdb", "pg_ctl", "postgres")
	}
	if got, err := findBinaries(); err != nil || got != filepath.Join(root, "lib", "15", "bin") {
		t.Fatalf("from the version directories: %q, %v; want version 15's", got, err)
	}
}

// fakeTB records what usable asks of a test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skip(...any)           { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

// Without PostgreSQL a test is skipped, but fails where CI is set (CI must
// not pass by skipping); a server that does not start fails it.
func TestUsable(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{}
	if usable(f, errNoBinaries) || !f.skipped || f.failed {
		t.Fatalf("no binaries, no CI: %+v", f)
	}
	t.Setenv("CI", "true")
	f = &fakeTB{}
	if usable(f, errNoBinaries) || f.skipped || !f.failed {
		t.Fatalf("no binaries in CI: %+v", f)
	}
	f = &fakeTB{}
	if usable(f, errors.New("pg_ctl start: failed")) || !f.failed {
		t.Fatalf("a failed start: %+v", f)
	}
	f = &fakeTB{}
	if !usable(f, nil) || f.skipped || f.failed {
		t.Fatalf("a started server: %+v", f)
	}
}
