package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/internal/pgtest"
	"github.com/edgeid/edgeid/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// storage: postgres serves from the database migrate made; a database not
// migrated is refused at start, naming the command that fixes it.
func TestServeOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", testToken)
	_, err := loadArgs("serve", []string{"--storage", "postgres", "--postgres-dsn", dsn})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	err = serve(ctx, []string{"--storage", "postgres", "--postgres-dsn", dsn, "--state-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics=off"}, nil)
	if err == nil || !strings.Contains(err.Error(), "edgeid-authority migrate") {
		t.Fatalf("serve on an empty database: %v; want a refusal naming edgeid-authority migrate", err)
	}
	var out strings.Builder
	if err := migrateCmd(ctx, []string{"--storage", "postgres", "--postgres-dsn", dsn}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "schema version") {
		t.Errorf("migrate printed %q", out.String())
	}
	// Twice is fine: a database at the version is left as it is.
	if err := migrateCmd(ctx, []string{"--storage", "postgres", "--postgres-dsn", dsn}, &out); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	s := startServe(t, "--storage", "postgres", "--postgres-dsn", dsn)
	b, _ := json.Marshal(store.Batch{Classes: demo.Classes(), Devices: []store.Device{{ID: "pg-1", Class: "thermostat", Status: store.DeviceActive}}})
	if code, body := s.do(t, "POST", "/admin/v1/import", "application/json", string(b)); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	if code, body := s.do(t, "GET", "/admin/v1/devices/pg-1", "", ""); code != 200 || !strings.Contains(body, `"pg-1"`) {
		t.Fatalf("device from postgres: %d %s", code, body)
	}
	s.stop()
	// A second process on the same database sees what the first wrote.
	s2 := startServe(t, "--storage", "postgres", "--postgres-dsn", dsn)
	if code, body := s2.do(t, "GET", "/admin/v1/devices/pg-1", "", ""); code != 200 {
		t.Fatalf("device after a restart: %d %s", code, body)
	}
}

func TestMigrateBadger(t *testing.T) {
	var out strings.Builder
	dir := t.TempDir()
	if err := migrateCmd(context.Background(), []string{"--state-dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "badger "+dir+"/store: schema version") {
		t.Errorf("migrate printed %q", out.String())
	}
}
