package authority

import "github.com/edgeid/edgeid/store"

// Storage is where the authority keeps its registry (the records gateways
// sync), the change log that is their feed, and its own documents (gateways,
// codes, keys, sessions, replay entries, limiter state). The Authority owns
// it: HTTP handlers and pages reach it only through Authority methods.
//
// Two implementations: *store.Store (Badger, embedded, one process: the
// default) and *pgstore.Store (PostgreSQL, shared by any number of
// replicas). cloudsync/authority/storagetest is the conformance suite both
// pass.
type Storage interface {
	// Records as of the last commit; ErrNotFound (wrapped) when absent.
	Device(id string) (store.Device, error)
	Class(name string) (store.DeviceClass, error)
	User(id string) (store.User, error)
	Grant(id string) (store.Grant, error)
	Revocation(kind store.RevocationKind, value string) (store.Revocation, bool, error)
	DeviceByCertFingerprint(fp string) (store.Device, error)
	DevicesOfOwner(owner string) ([]string, error)
	Devices() ([]store.Device, error)
	Classes() ([]store.DeviceClass, error)
	Users() ([]store.User, error)
	Grants() ([]store.Grant, error)
	Issuers() ([]store.Issuer, error)

	// ApplyLoggedBy validates b whole and commits it as the next revision
	// of the change log, with its expectations (Batch.Expect, a conflict is
	// a *store.ConflictError and writes nothing) and its documents
	// (Batch.Docs) in the same transaction. Revisions are consecutive and
	// committed in order: a reader that sees rev N sees every rev below it.
	ApplyLoggedBy(b *store.Batch, by string) (uint64, error)
	// ApplyLoggedFunc commits the batch build makes from the records as
	// they stand inside the committing transaction, when no other commit
	// can land before it: a read-modify-write that cannot conflict, so
	// writers of the same record cannot starve it. For changes that must
	// win (revoking, suspending, unpairing, moving a device).
	ApplyLoggedFunc(by string, build func(r store.RecordReader) (*store.Batch, error)) (uint64, error)
	// Rev is the last committed revision.
	Rev() (uint64, error)
	// LogSince returns up to max entries after from, in order;
	// store.ErrLogTrimmed when the log no longer reaches back to from+1.
	LogSince(from uint64, max int) ([]store.LogEntry, error)
	// Snapshot is every record and the rev they are current at, read in one
	// consistent view.
	Snapshot() (*store.Batch, uint64, error)
	// SiteSnapshot is Snapshot for the gateways of one site: the classes,
	// the issuers and the records that reach the site (store/sites.go);
	// "" is Snapshot. LogEntry.ForSite is the same cut of one change.
	SiteSnapshot(site string) (*store.Batch, uint64, error)
	// Watch registers fn to run after each commit, made by this process or,
	// with a shared backend, by any other (then Applied names only the Rev).
	Watch(fn func(store.Applied))

	// Documents: JSON values by kind and id, not synced to gateways.
	PutDoc(kind, id string, v any) error
	GetDoc(kind, id string, v any) error
	GetDocVersion(kind, id string, v any) (uint64, error)
	DeleteDoc(kind, id string) error
	TakeDoc(kind, id string, v any) error
	ListDocs(kind string, fn func(id string, raw []byte) error) error
	CommitDocs(expect map[string]uint64, ws ...store.DocWrite) error
}

// The embedded default.
var _ Storage = (*store.Store)(nil)
