package authority

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/edgeid/edgeid/store"
)

// Read-modify-writes (issue 16). The rule: "a read-modify-write of a
// record is one conditional commit". Every method here that changes a
// record it read reads it with its revision (store records carry Rev),
// changes the fields it is about, and commits with the batch's Expect
// naming what it read (store.Batch.ExpectRev); documents that change with
// the records (a pairing's state, an account's credential, a share
// request) go in the same commit (store.Batch.Docs). A conflict means a
// record changed meanwhile and nothing was written:
//   - a change of one field that means the same on any version of the
//     record (a status, an owner, a share made or revoked) is tried again
//     from a fresh read, at most casAttempts times (retry);
//   - a person's edit made on a page that showed the record (a rename) is
//     refused with ErrChanged: the page shows it, the API answers 409.

// casAttempts bounds retry: with every attempt reading afresh, each
// conflict means another change committed, so running out takes that many
// commits to one record within a few milliseconds.
const casAttempts = 12

// retry runs try, a read-modify-write from a fresh read, until it commits
// without a conflict, at most casAttempts times, with a random pause
// between attempts of up to 1, 2, 4 … 64 ms (at most ~0.4 s in all); it returns try's last error (a conflict when all
// attempts conflicted).
func retry(try func() error) error {
	var err error
	for i := range casAttempts {
		if err = try(); !errors.Is(err, store.ErrConflict) {
			return err
		}
		// Exponential, jittered: with a linear pause of at most i ms, 16
		// tokens issued at once in one grant at two replicas on PostgreSQL
		// ran one writer out of attempts (CI, under the race detector).
		time.Sleep(time.Duration(rand.Int64N(int64(min(1<<i, 64)) * int64(time.Millisecond))))
	}
	return err
}

// ErrChanged refuses a person's edit of a record that changed after the page
// they edited it on showed it (or while the edit was being written).
var ErrChanged = errors.New("the device changed meanwhile; reload the page and try again")

// RenameDevice sets the name owner gives their device. rev is the revision
// of the device the page showed (0 if the caller had none): a device changed
// since (revoked, suspended, unpaired, renamed elsewhere) is not renamed,
// ErrChanged. The rename writes the name alone on the device as it is, in a
// conditional commit: it never writes back a status or owner it read before
// a revocation or unpairing committed.
func (a *Authority) RenameDevice(id, owner, name string, rev uint64) error {
	d, err := a.Store.Device(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.Owner != owner) {
		return ErrNotYours
	} else if err != nil {
		return fmt.Errorf("load device %q: %w", id, err)
	}
	if rev != 0 && d.Rev != rev {
		return ErrChanged
	}
	d.Name = name
	_, err = a.Apply((&store.Batch{Devices: []store.Device{d}}).ExpectRev(store.DeviceKey(id), d.Rev), "owner "+owner)
	if errors.Is(err, store.ErrConflict) {
		return ErrChanged
	}
	return err
}

// ErrNotYours is an owner's change of a device that is not (or no longer) theirs.
var ErrNotYours = errors.New("that device is not yours")

// createAccount commits a new user and its credential together, on
// condition that no user of that id exists: of several registrations of one
// name at once, exactly one commits; the others are ErrOwnerTaken. (The
// credential is written, not expected absent: a credential left by an
// account deleted through the admin API logs nobody in, as login needs an
// active user, and must not keep the name taken forever.)
func (a *Authority) createAccount(u store.User, c credential, who string) error {
	b := (&store.Batch{Users: []store.User{u},
		Docs: []store.DocWrite{{Kind: docCredential, ID: u.ID, Value: c}}}).ExpectRev(store.UserKey(u.ID), 0)
	_, err := a.Apply(b, who)
	if errors.Is(err, store.ErrConflict) {
		return ErrOwnerTaken
	}
	return err
}
