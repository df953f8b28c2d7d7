package authority

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/edgeid/edgeid/store"
)

// The Authority's reads for its HTTP handlers and pages, and the pages'
// own state (sessions, the form key, credentials): handlers and pages call
// these, never the storage, so what a page may touch is decided here.

// Device is the registered device id.
func (a *Authority) Device(id string) (store.Device, error) { return a.Store.Device(id) }

// Devices lists every registered device.
func (a *Authority) Devices() ([]store.Device, error) { return a.Store.Devices() }

// Classes lists the device classes.
func (a *Authority) Classes() ([]store.DeviceClass, error) { return a.Store.Classes() }

// User is the account id.
func (a *Authority) User(id string) (store.User, error) { return a.Store.User(id) }

// Grant is the share id.
func (a *Authority) Grant(id string) (store.Grant, error) { return a.Store.Grant(id) }

// OwnedDevices are the devices paired to owner, in id order.
func (a *Authority) OwnedDevices(owner string) ([]store.Device, error) {
	ids, err := a.Store.DevicesOfOwner(owner)
	if err != nil {
		return nil, err
	}
	out := make([]store.Device, 0, len(ids))
	for _, id := range ids {
		d, err := a.Store.Device(id)
		if errors.Is(err, store.ErrNotFound) {
			continue // unpaired meanwhile
		} else if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// webSession loads the stored page session whose cookie hashes to id.
func (a *Authority) webSession(id string) (webSession, error) {
	var s webSession
	err := a.Store.GetDoc(docWebSession, id, &s)
	return s, err
}

func (a *Authority) putWebSession(id string, s webSession) error {
	return a.Store.PutDoc(docWebSession, id, s)
}

func (a *Authority) dropWebSession(id string) error { return a.Store.DeleteDoc(docWebSession, id) }

// credential is user's password hash.
func (a *Authority) credential(user string) (credential, error) {
	var c credential
	err := a.Store.GetDoc(docCredential, user, &c)
	return c, err
}

// webFormKey is the key the pages' CSRF tokens are signed with, made on
// first use. Replicas starting at once must agree on one: the key is
// created only if absent, then read back, so a loser uses the winner's.
func (a *Authority) webFormKey(make func() webKey) (webKey, error) {
	var k webKey
	err := a.Store.GetDoc(docWebKey, "csrf", &k)
	if errors.Is(err, store.ErrNotFound) {
		err = a.Store.CommitDocs(nil, store.DocWrite{Kind: docWebKey, ID: "csrf", Value: make(), ExpectAbsent: true})
		if err == nil || errors.Is(err, store.ErrConflict) {
			err = a.Store.GetDoc(docWebKey, "csrf", &k)
		}
	}
	return k, err
}

// sweepExpired deletes the documents of kind whose "expires" has passed,
// each on condition that it is still the version judged (a session renewed
// meanwhile stays).
func (a *Authority) sweepExpired(kind string, now time.Time) error {
	var ids []string
	err := a.Store.ListDocs(kind, func(id string, raw []byte) error {
		var d struct {
			Expires time.Time `json:"expires"`
		}
		if json.Unmarshal(raw, &d) != nil || !now.Before(d.Expires) {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		var d struct {
			Expires time.Time `json:"expires"`
		}
		ver, err := a.Store.GetDocVersion(kind, id, &d)
		if err != nil || now.Before(d.Expires) {
			continue
		}
		_ = a.Store.CommitDocs(nil, store.DocWrite{Kind: kind, ID: id, Delete: true, ExpectVersion: ver})
	}
	return nil
}

// loginCounters are the pages' failed-login counters, in the storage.
func (a *Authority) loginCounters(x *limits) loginCounters {
	return loginCounters{x: x, store: a.Store}
}
