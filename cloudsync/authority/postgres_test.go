package authority_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/internal/pgtest"
	"github.com/edgeid/edgeid/store/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The authority's read-modify-write races (issue 16, "Also found"), run
// again with the authority on PostgreSQL: each conditional commit must
// hold there as on Badger.
func TestRacesOnPostgres(t *testing.T) {
	pgtest.DSN(t) // skips here, not in each subtest, when PostgreSQL is absent
	fixtureStorage = func(t *testing.T) (authority.Storage, func()) {
		dsn := pgtest.DSN(t)
		if err := pgstore.Migrate(context.Background(), dsn); err != nil {
			t.Fatal(err)
		}
		st, err := pgstore.Open(context.Background(), dsn, pgstore.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return st, st.Close
	}
	defer func() { fixtureStorage = nil }()
	for name, test := range map[string]func(*testing.T){
		"RenameCannotUndoRevocation":           TestRenameCannotUndoRevocation,
		"StaleRenameAfterRevokeIsRefused":      TestStaleRenameAfterRevokeIsRefused,
		"DeviceChangesKeepRevocation":          TestDeviceChangesKeepRevocation,
		"ConcurrentRegistrationsOfOneName":     TestConcurrentRegistrationsOfOneName,
		"ConcurrentRegisterOwnerAndAddMember":  TestConcurrentRegisterOwnerAndAddMember,
		"ApprovalSurvivesConcurrentPolls":      TestApprovalSurvivesConcurrentPolls,
		"ConcurrentApprovalsOfOneCode":         TestConcurrentApprovalsOfOneCode,
		"ConcurrentApprovalsOfOneShareRequest": TestConcurrentApprovalsOfOneShareRequest,
		"DisableUserRacesNewShares":            TestDisableUserRacesNewShares,
		"CSVImportExpectsTheDevicesItRead":     TestCSVImportExpectsTheDevicesItRead,
		"ReplicasCountEveryLoginFailure":       TestReplicasCountEveryLoginFailure,
		"ReplicasKeepEveryAdminKey":            TestReplicasKeepEveryAdminKey,
		"ReplicasRevokeEveryTokenOfAGrant":     TestReplicasRevokeEveryTokenOfAGrant,
		"ReplicasRotatingAtOnceMakeOneKey":     TestReplicasRotatingAtOnceMakeOneKey,
	} {
		t.Run(name, test)
	}
}
