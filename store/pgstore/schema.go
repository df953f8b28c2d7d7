package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaVersion is the layout of tables this code reads and writes.
// Migrate brings a database to it; Open refuses any other.
const SchemaVersion = 1

// ErrSchema is wrapped by the error of Open and Migrate when the database's
// schema is not the one this code reads.
var ErrSchema = errors.New("database schema does not match this edgeid-authority")

// migrations[i] takes a database from schema version i to i+1, in one
// transaction with the version's update.
//
// Version 1:
//   - head: the one row holding the last committed revision. A commit
//     takes its row lock first (UPDATE ... RETURNING), which serialises
//     commits across every process and numbers them without gaps (a
//     rollback undoes the increment; a sequence would leave holes).
//   - records: every synced record, kind ("devices", "classes", "users",
//     "grants", "issuers", "revocations", the kinds of Batch.Expect keys)
//     and id (a revocation's is Revocation.Key()), the rev that last wrote
//     it, and its JSON exactly as the Badger store keeps it (bytea, so a
//     name holding any byte reads back as written). expires_at is when a
//     revocation is forgotten; owner and class copy a device's, for
//     DevicesOfOwner and the refusal to delete a class in use.
//   - device_index: a device's unique credentials under the Badger store's
//     index keys (certificate fingerprint, issuer and serial, PSK
//     identity) and the device holding each.
//   - log: the change log, one row per rev, its entry in the Badger
//     store's format (store.EncodeLogEntry); logged_at and logged_by are
//     copies for operators' queries.
//   - grant_devices: the devices each share covers (store.Grant.Devices),
//     for the shares whose sites follow a device (store.PlanSites).
//   - reach: the sites each device, user, share and revocation reaches
//     (store/sites.go), as planned by the commit that wrote it; a
//     revocation's expires with it. SiteSnapshot reads a site's records
//     through it.
//   - docs: documents, with a version drawn from doc_versions on every
//     write: never reused, so a version read before a delete and a
//     re-creation does not match the new document.
//
// Text columns are COLLATE "C": lists come in byte order, as Badger's
// iteration gives them, whatever the database's default collation.
var migrations = []string{
	`
CREATE TABLE head (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	rev bigint NOT NULL
);
INSERT INTO head (rev) VALUES (0);

CREATE TABLE records (
	kind text COLLATE "C" NOT NULL,
	id text COLLATE "C" NOT NULL,
	rev bigint NOT NULL,
	body bytea NOT NULL,
	expires_at timestamptz,
	owner text COLLATE "C",
	class text COLLATE "C",
	PRIMARY KEY (kind, id)
);
CREATE INDEX records_owner ON records (owner, id) WHERE kind = 'devices' AND owner IS NOT NULL;
CREATE INDEX records_class ON records (class) WHERE kind = 'devices';
CREATE INDEX records_expires ON records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE device_index (
	key text COLLATE "C" PRIMARY KEY,
	device text COLLATE "C" NOT NULL
);
CREATE INDEX device_index_device ON device_index (device);

CREATE TABLE log (
	rev bigint PRIMARY KEY,
	logged_at timestamptz NOT NULL,
	logged_by text NOT NULL,
	entry bytea NOT NULL
);

CREATE TABLE grant_devices (
	device text COLLATE "C" NOT NULL,
	grant_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (device, grant_id)
);
CREATE INDEX grant_devices_grant ON grant_devices (grant_id);

CREATE TABLE reach (
	kind text COLLATE "C" NOT NULL,
	id text COLLATE "C" NOT NULL,
	sites text[] NOT NULL,
	expires_at timestamptz,
	PRIMARY KEY (kind, id)
);
CREATE INDEX reach_sites ON reach USING gin (sites);
CREATE INDEX reach_expires ON reach (expires_at) WHERE expires_at IS NOT NULL;

CREATE SEQUENCE doc_versions;
CREATE TABLE docs (
	kind text COLLATE "C" NOT NULL,
	id text COLLATE "C" NOT NULL,
	version bigint NOT NULL,
	body bytea NOT NULL,
	PRIMARY KEY (kind, id)
);
`,
}

// migrateLock is the advisory lock key Migrate holds, so that replicas
// started together migrate one after the other ("edgeid" in ASCII).
const migrateLock = 0x656467656964

// Migrate creates the schema in the database dsn names, or upgrades it to
// SchemaVersion, each step in one transaction. A database already at
// SchemaVersion is left as it is; a newer one is refused (ErrSchema).
func Migrate(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("pgstore: migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLock)); err != nil {
		return fmt.Errorf("pgstore: migrate: lock: %w", err)
	}
	// Closing the connection releases the lock too; unlocking first says so.
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLock))
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	version integer NOT NULL
)`); err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	v, err := schemaVersion(ctx, conn)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("pgstore: migrate: %w: the database is at schema version %d, newer than this edgeid-authority's %d; migrate does not downgrade: run a newer edgeid-authority", ErrSchema, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)
ON CONFLICT (one) DO UPDATE SET version = excluded.version`, v+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("pgstore: migrate to schema version %d: %w", v+1, err)
		}
	}
	return nil
}

// querier is what reads need of a connection, a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion reads the database's schema version; 0 when it has none.
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	var pe *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pe) && pe.Code == "42P01": // undefined_table
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("pgstore: read schema version: %w", err)
	}
	return v, nil
}

// checkSchema refuses a database whose schema is not SchemaVersion,
// telling the operator what to run.
func checkSchema(ctx context.Context, q querier) error {
	v, err := schemaVersion(ctx, q)
	switch {
	case err != nil:
		return err
	case v == 0:
		return fmt.Errorf("pgstore: %w: the database has no EdgeID schema; run \"edgeid-authority migrate\" first", ErrSchema)
	case v < SchemaVersion:
		return fmt.Errorf("pgstore: %w: the database is at schema version %d, this edgeid-authority reads %d; run \"edgeid-authority migrate\" first", ErrSchema, v, SchemaVersion)
	case v > SchemaVersion:
		return fmt.Errorf("pgstore: %w: the database is at schema version %d, newer than this edgeid-authority's %d; upgrade edgeid-authority (\"edgeid-authority migrate\" does not downgrade)", ErrSchema, v, SchemaVersion)
	}
	return nil
}
