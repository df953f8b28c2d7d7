package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/authority/storagetest"
	"github.com/edgeid/edgeid/internal/pgtest"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
	"github.com/edgeid/edgeid/store/pgstore"
)

var _ authority.Storage = (*pgstore.Store)(nil)

func TestMain(m *testing.M) { pgtest.Main(m) }

// migrated is a new database with the schema.
func migrated(t *testing.T) string {
	t.Helper()
	dsn := pgtest.DSN(t)
	if err := pgstore.Migrate(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	return dsn
}

func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestStorageConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) authority.Storage { return open(t, migrated(t)) })
}

// Two handles on one database are two replicas of the authority.
func TestStorageConformanceShared(t *testing.T) {
	storagetest.RunShared(t, func(t *testing.T) (a, b authority.Storage) {
		dsn := migrated(t)
		return open(t, dsn), open(t, dsn)
	})
}

func exec(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// Open refuses a database without the schema, or of another version,
// telling the operator what to do; Migrate is idempotent and refuses to
// downgrade.
func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	_, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if !errors.Is(err, pgstore.ErrSchema) || !strings.Contains(err.Error(), `run "edgeid-authority migrate"`) {
		t.Fatalf("Open of an empty database: %v", err)
	}
	for range 2 {
		if err := pgstore.Migrate(ctx, dsn); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	if _, err := s.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}, "t"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := pgstore.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if rev, err := open(t, dsn).Rev(); err != nil || rev != 1 {
		t.Fatalf("after migrating again: rev %d, %v", rev, err)
	}
	exec(t, dsn, `UPDATE schema_version SET version = 0`)
	if _, err := pgstore.Open(ctx, dsn, pgstore.Options{}); !errors.Is(err, pgstore.ErrSchema) || !strings.Contains(err.Error(), `run "edgeid-authority migrate"`) {
		t.Fatalf("Open of an older schema: %v", err)
	}
	exec(t, dsn, `UPDATE schema_version SET version = 99`)
	if _, err := pgstore.Open(ctx, dsn, pgstore.Options{}); !errors.Is(err, pgstore.ErrSchema) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: %v", err)
	}
	if err := pgstore.Migrate(ctx, dsn); !errors.Is(err, pgstore.ErrSchema) {
		t.Fatalf("Migrate of a newer schema: %v", err)
	}
}

// The same commits give the same log (batches as logged, with the
// dependents carried along and the sites reached, Reach and Was) and the
// same snapshots, whole and per site, on Badger and on PostgreSQL: the
// two share the rules (store/export.go), this holds them to the outcome.
func TestSameLogAsBadger(t *testing.T) {
	bs, err := store.Open(store.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ps := open(t, migrated(t))
	now := time.Now().UTC().Truncate(time.Second)
	sensor := func(id, owner, site string) store.Device {
		return store.Device{ID: id, Class: "sensor", Status: store.DeviceActive, Owner: owner, Site: site}
	}
	share := func(id, owner, grantee string, devs ...string) store.Grant {
		g := store.Grant{ID: id, Owner: owner, Device: devs[0], Grantee: grantee, GranteeKind: store.GranteeUser}
		for _, d := range devs {
			g.Resources = append(g.Resources, store.SharedResource{Device: d, Group: "t", Scopes: []string{"sub"}})
		}
		return g
	}
	batches := []*store.Batch{
		{Classes: []store.DeviceClass{{Name: "sensor", Permissions: []policy.Rule{{Filter: "t/{device}", Actions: policy.Publish}}}},
			Users:   []store.User{{ID: "alice", Status: store.UserActive}, {ID: "bob", Status: store.UserActive, Site: "B"}, {ID: "carol", Status: store.UserActive}},
			Devices: []store.Device{sensor("a1", "alice", "A"), sensor("b1", "bob", "B"), sensor("fresh", "", ""), sensor("a2", "alice", "A")},
			Grants:  []store.Grant{share("g1", "alice", "bob", "a1")},
			Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "b1", RevokedAt: now},
				{Kind: store.RevokeToken, Value: "jti-1", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}}},
		{Devices: []store.Device{sensor("a1", "alice", "B")}},
		{Devices: []store.Device{sensor("fresh", "carol", "C")}},
		{Users: []store.User{{ID: "carol", Status: store.UserActive, Site: "D"}}},
		{Grants: []store.Grant{share("g2", "alice", "carol", "a2", "b1")}},
		{Devices: []store.Device{sensor("a2", "bob", "")}, Revocations: []store.Revocation{{Kind: store.RevokeDevice, Value: "a1", RevokedAt: now}}},
		{Delete: store.Deletions{Devices: []string{"b1"}, Grants: []string{"g1"}, Revocations: []string{"device/b1"}}},
		{Delete: store.Deletions{Users: []string{"bob"}}, Devices: []store.Device{sensor("a2", "", "A")}},
	}
	for i, b := range batches {
		r1, err1 := bs.ApplyLoggedBy(b, "differential")
		r2, err2 := ps.ApplyLoggedBy(b, "differential")
		if err1 != nil || err2 != nil || r1 != r2 {
			t.Fatalf("batch %d: badger rev %d %v, postgres rev %d %v", i, r1, err1, r2, err2)
		}
	}
	log := func(s authority.Storage) string {
		es, err := s.LogSince(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for i := range es {
			es[i].At = time.Time{}
		}
		return mustJSON(t, es)
	}
	if b, p := log(bs), log(ps); b != p {
		t.Fatalf("logs differ:\nbadger   %s\npostgres %s", b, p)
	}
	for _, site := range []string{"", "A", "B", "C", "D", "E"} {
		b1, r1, err1 := bs.SiteSnapshot(site)
		b2, r2, err2 := ps.SiteSnapshot(site)
		if err1 != nil || err2 != nil || r1 != r2 {
			t.Fatalf("site %q: %d %v, %d %v", site, r1, err1, r2, err2)
		}
		if j1, j2 := mustJSON(t, b1), mustJSON(t, b2); j1 != j2 {
			t.Fatalf("site %q snapshots differ:\nbadger   %s\npostgres %s", site, j1, j2)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// A commit of another handle reaches the watchers after the listener lost
// its connection: it reconnects, and tells of what it missed.
func TestListenerReconnects(t *testing.T) {
	dsn := migrated(t)
	a, b := open(t, dsn), open(t, dsn)
	var mu sync.Mutex
	var told []uint64
	b.Watch(func(ap store.Applied) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, ap.Rev)
	})
	toldOf := func(rev uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(told, rev)
	}
	for i := range 3 {
		// End every listener of the database (a's and b's).
		exec(t, dsn, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`)
		rev, err := a.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: fmt.Sprint("u", i), Status: store.UserActive}}}, "t")
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !toldOf(rev) {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: handle b was never told of rev %d (told %v)", i, rev, told)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(told, []uint64{1, 2, 3}) {
		t.Fatalf("told %v, want each rev once, in order", told)
	}
}

// A commit sweeps the revocations past their expiry from the tables
// (reads never see them anyway).
func TestSweepsExpiredRevocations(t *testing.T) {
	dsn := migrated(t)
	s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{SweepEvery: time.Nanosecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().UTC()
	if _, err := s.ApplyLoggedBy(&store.Batch{Revocations: []store.Revocation{
		{Kind: store.RevokeToken, Value: "old", RevokedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)},
		{Kind: store.RevokeToken, Value: "kept", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}}}, "t"); err != nil {
		t.Fatal(err)
	}
	count := func(table string) int {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE kind = 'revocations'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("records"); n != 2 {
		t.Fatalf("%d revocation rows, want 2 (one kept a second past its expiry, as Badger)", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok, err := s.Revocation(store.RevokeToken, "old"); err != nil {
			t.Fatal(err)
		} else if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the expired revocation still reads")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: "u", Status: store.UserActive}}}, "t"); err != nil {
		t.Fatal(err)
	}
	if r, n := count("records"), count("reach"); r != 1 || n != 1 {
		t.Fatalf("after a sweeping commit: %d revocation rows, %d reach rows; want the one unexpired", r, n)
	}
}

// A log whose early entries an operator removed answers ErrLogTrimmed to a
// reader that needs them, as the Badger store's does.
func TestLogTrimmed(t *testing.T) {
	dsn := migrated(t)
	s := open(t, dsn)
	for i := range 4 {
		if _, err := s.ApplyLoggedBy(&store.Batch{Users: []store.User{{ID: fmt.Sprint("u", i), Status: store.UserActive}}}, "t"); err != nil {
			t.Fatal(err)
		}
	}
	exec(t, dsn, `DELETE FROM log WHERE rev <= 2`)
	if es, err := s.LogSince(1, 10); !errors.Is(err, store.ErrLogTrimmed) {
		t.Fatalf("LogSince(1) = %d entries, %v; want ErrLogTrimmed", len(es), err)
	}
	if es, err := s.LogSince(2, 10); err != nil || len(es) != 2 || es[0].Rev != 3 {
		t.Fatalf("LogSince(2) = %+v, %v", es, err)
	}
	// From 0 is "whatever is there", as Badger's.
	if es, err := s.LogSince(0, 10); err != nil || len(es) != 2 || es[0].Rev != 3 {
		t.Fatalf("LogSince(0) = %+v, %v", es, err)
	}
}
