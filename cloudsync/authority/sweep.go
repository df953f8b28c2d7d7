package authority

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/edgeid/edgeid/store"
)

// The sweep deletes the authority's short-lived documents once they have
// expired: refresh tokens (live, spent and revoked grants, and the access
// tokens recorded with a grant), device and user codes, gateway enrollment
// codes, UMA permission tickets, and the replay entries of client and
// gateway assertions and DPoP proofs (documents shared by the replicas:
// token.go). With replicas, each sweeps; deleting what another deleted
// already is no harm.
//
// A goroutine owned by the Authority (started by New, stopped by Close)
// rather than cleanup when a record is next read: the records that pile up
// are the ones nobody reads again (a device code never polled once its
// owner walked away, a refresh token of a device that was reset), so only
// a sweep can find them.

// recordSweepEvery is the sweep's period when Config.SweepInterval is zero.
const recordSweepEvery = 10 * time.Minute

// sweepGrace is how long after its expiry a record is kept: a late poll
// still hears expired_token, not "unknown".
const sweepGrace = time.Minute

// SweepResult counts what one sweep deleted, by kind of record.
type SweepResult map[string]int

// sweepLoop sweeps every interval until Close.
func (a *Authority) sweepLoop(every time.Duration) {
	defer close(a.sweepDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-a.done:
			return
		case now := <-t.C:
			if _, err := a.Sweep(now); err != nil && !a.closing() {
				a.log.Warn("sweep of expired records stopped early", "err", err)
			}
		}
	}
}

func (a *Authority) closing() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Sweep deletes the records that expired before now (less sweepGrace) and
// says how many of each kind went. It stops at the first store error, or
// when the authority closes.
func (a *Authority) Sweep(now time.Time) (SweepResult, error) {
	cut := now.Add(-sweepGrace)
	res := SweepResult{}
	for _, k := range []struct {
		kind string
		dead func([]byte) (bool, error)
	}{
		{docRefresh, expiredBy[refreshGrant](cut)},
		{docRefreshOld, expiredBy[spentRefresh](cut)},
		{docFamily, expiredBy[spentRefresh](cut)},
		{docGrantToks, expiredBy[grantTokens](cut)},
		{docDeviceCode, expiredBy[pendingPairing](cut)},
		{docCode, expiredBy[enrollCode](cut)},
		{docAssertion, expiredBy[spentID](cut)},
		{docDPoPProof, expiredBy[spentID](cut)},
	} {
		n, err := a.sweepDocs(k.kind, k.dead)
		res[k.kind] = n
		if err != nil {
			return res, err
		}
	}
	// A user code points at its device code: it goes with it.
	n, err := a.sweepDocs(docUserCode, func(raw []byte) (bool, error) {
		var h string
		if err := json.Unmarshal(raw, &h); err != nil {
			return false, err
		}
		var p pendingPairing
		err := a.Store.GetDoc(docDeviceCode, h, &p)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		return false, err
	})
	res[docUserCode] = n
	if err != nil {
		return res, err
	}
	a.sweepTickets()
	total := 0
	for _, n := range res {
		total += n
	}
	if total > 0 {
		a.log.Info("expired records swept", "deleted", total, "refresh", res[docRefresh], "spent_refresh", res[docRefreshOld],
			"revoked_grants", res[docFamily], "grant_tokens", res[docGrantToks], "device_codes", res[docDeviceCode],
			"user_codes", res[docUserCode], "enroll_codes", res[docCode], "assertions", res[docAssertion], "dpop_proofs", res[docDPoPProof])
	}
	return res, nil
}

// sweepDocs deletes the documents of kind that dead says are dead (a record
// that does not decode is left, and logged: it is not ours to judge), each
// on condition that it is still the version judged.
func (a *Authority) sweepDocs(kind string, dead func([]byte) (bool, error)) (int, error) {
	var ids []string
	bad := 0
	err := a.Store.ListDocs(kind, func(id string, raw []byte) error {
		if a.closing() {
			return errClosing
		}
		d, err := dead(raw)
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se), errors.As(err, &te):
			bad++
		case err != nil:
			return err
		case d:
			ids = append(ids, id)
		}
		return nil
	})
	if bad > 0 {
		a.log.Warn("sweep: records that do not decode left in place", "kind", kind, "count", bad)
	}
	if err != nil {
		return 0, err
	}
	// Each is read again with its version and deleted on condition of it:
	// one written meanwhile (a grant's token list that grew, a replay
	// entry spent again, at this replica or another) is not dead any more.
	n := 0
	for _, id := range ids {
		var raw json.RawMessage
		ver, err := a.Store.GetDocVersion(kind, id, &raw)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted already (another replica's sweep)
		}
		if err != nil {
			return n, err
		}
		if d, err := dead(raw); err != nil || !d {
			continue
		}
		err = a.Store.CommitDocs(nil, store.DocWrite{Kind: kind, ID: id, Delete: true, ExpectVersion: ver})
		if errors.Is(err, store.ErrConflict) {
			continue // written meanwhile: the next sweep judges it again
		}
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

var errClosing = errors.New("the authority is closing")

// expiredBy says whether a document of type T expired before cut.
func expiredBy[T interface{ expiry() time.Time }](cut time.Time) func([]byte) (bool, error) {
	return func(raw []byte) (bool, error) {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return false, err
		}
		return v.expiry().Before(cut), nil
	}
}

func (g refreshGrant) expiry() time.Time   { return g.Expires }
func (s spentRefresh) expiry() time.Time   { return s.Expires }
func (g grantTokens) expiry() time.Time    { return g.Expires }
func (p pendingPairing) expiry() time.Time { return p.Expires }
func (c enrollCode) expiry() time.Time     { return c.Expires }
