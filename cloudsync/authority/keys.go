package authority

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/edgeid/edgeid/store"
)

// Token-key rotation: a new key is published (in /jwks.json and, through the
// feed, at every gateway) and only signs once PublishAhead has passed, so no
// gateway ever sees a token from a key it does not know yet. The retired key
// stays published until every token it signed has expired.
//
// Replicas (issue 16): the keyring is one document that every replica
// shares. Each keeps a copy in memory (no store read per token) and reloads
// it when the document's version changes: compared after every commit
// (Watch: a rotation or a promotion republishes the issuer, which is a
// commit that wakes every replica) and, at most once a second, before
// signing. Rotation and promotion are conditional writes of the document
// (ExpectVersion), retried from a fresh read: of two replicas rotating at
// once, one makes the next key and the other finds it; of two promoting,
// one promotes and the other finds it done. The issuer record is written
// on condition of the keyring version its keys were read from, so a
// replica holding an older keyring never overwrites a newer key set.

type keyRec struct {
	Key        json.RawMessage `json:"key"`
	ActiveFrom time.Time       `json:"active_from"`
	RetiredAt  time.Time       `json:"retired_at,omitzero"`
}

type keyring struct {
	Current keyRec  `json:"current"`
	Next    *keyRec `json:"next,omitempty"`
	Prev    *keyRec `json:"prev,omitempty"`
}

const (
	docKeyring = "keyring"
	keyringID  = "token"
	// keyCheckEvery is how often signing compares the keyring's version
	// with the copy's, at most (Watch does it at every commit).
	keyCheckEvery = time.Second
)

// loadKeyring reads the keyring, making it on the first start (of the
// first replica: createDoc), and makes it this replica's copy.
func (a *Authority) loadKeyring() error {
	var kr keyring
	err := createDoc(a.Store, docKeyring, keyringID, &kr, func() (any, error) {
		k, err := a.loadKey("token")
		if err != nil {
			return nil, err
		}
		raw, err := json.Marshal(k)
		return keyring{Current: keyRec{Key: raw, ActiveFrom: time.Now()}}, err
	})
	if err != nil {
		return fmt.Errorf("token keyring: %w", err)
	}
	return a.reloadKeys()
}

// reloadKeys reads the keyring document and, when its version is not the
// copy's, makes it the copy.
func (a *Authority) reloadKeys() error {
	a.keyLoadMu.Lock()
	defer a.keyLoadMu.Unlock()
	var kr keyring
	ver, err := a.Store.GetDocVersion(docKeyring, keyringID, &kr)
	if err != nil {
		return fmt.Errorf("read the token keyring: %w", err)
	}
	a.keyMu.Lock()
	same := ver == a.keysVer && a.tokenKey != nil
	a.keyMu.Unlock()
	if same {
		return nil
	}
	k, err := jwk.ParseKey(kr.Current.Key)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	a.keyMu.Lock()
	old := a.tokenKey
	a.keys, a.keysVer, a.tokenKey = kr, ver, k
	a.keyMu.Unlock()
	if old != nil && mustKid(old) != mustKid(k) {
		a.log.Info("token keyring reloaded: another key signs", "kid", mustKid(k))
	}
	return nil
}

// publicKeys are the keys of kr gateways must trust at now: current, next,
// and the previous one while its tokens may still be valid.
func (a *Authority) publicKeys(kr keyring, now time.Time) []json.RawMessage {
	out := []json.RawMessage{kr.Current.Key}
	if kr.Next != nil {
		out = append(out, kr.Next.Key)
	}
	if p := kr.Prev; p != nil && now.Sub(p.RetiredAt) < a.cfg.TokenTTL+time.Minute {
		out = append(out, p.Key)
	}
	return out
}

// publicSet is the public key set of keys (private JWKs).
func publicSet(keys []json.RawMessage) (jwk.Set, error) {
	set := jwk.NewSet()
	for _, raw := range keys {
		k, err := jwk.ParseKey(raw)
		if err != nil {
			return nil, err
		}
		pub, err := k.PublicKey()
		if err != nil {
			return nil, err
		}
		_ = set.AddKey(pub)
	}
	return set, nil
}

// recKid is the kid of a keyring entry ("" if it does not parse).
func recKid(r keyRec) string {
	k, err := jwk.ParseKey(r.Key)
	if err != nil {
		return ""
	}
	return mustKid(k)
}

// Rotate makes and publishes the next token key; it signs from PublishAhead
// on. A rotation under way (begun here or at another replica) is answered
// with its key: the keyring is written on condition of the version it was
// read at, so two replicas rotating at once make one next key.
func (a *Authority) Rotate(who string) (kid string, signsFrom time.Time, err error) {
	a.rotateMu.Lock()
	defer a.rotateMu.Unlock()
	var made jwk.Key // made once, offered at each attempt
	started := false
	err = retry(func() error {
		started = false
		var kr keyring
		ver, err := a.Store.GetDocVersion(docKeyring, keyringID, &kr)
		if err != nil {
			return fmt.Errorf("read the token keyring: %w", err)
		}
		if kr.Next != nil {
			kid, signsFrom = recKid(*kr.Next), kr.Next.ActiveFrom
			return nil
		}
		if made == nil {
			if made, err = a.newKey("token"); err != nil {
				return err
			}
		}
		raw, err := json.Marshal(made)
		if err != nil {
			return err
		}
		kr.Next = &keyRec{Key: raw, ActiveFrom: time.Now().Add(a.cfg.KeyPublishAhead)}
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docKeyring, ID: keyringID, Value: kr, ExpectVersion: ver}); err != nil {
			return err
		}
		kid, signsFrom, started = mustKid(made), kr.Next.ActiveFrom, true
		return nil
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate the token key: %w", err)
	}
	if started {
		a.log.Info("token key rotation started", "by", who, "next_kid", kid, "signs_from", signsFrom)
	}
	if err := a.reloadKeys(); err != nil {
		return "", time.Time{}, err
	}
	if err := a.publishIssuer(); err != nil {
		return "", time.Time{}, fmt.Errorf("publish the next token key: %w", err)
	}
	return kid, signsFrom, nil
}

// signingKey returns the key to sign with now, promoting the next key once
// it has been published long enough. The copy of the keyring is compared
// with the store at most once a second here (and at every commit, by
// Watch); a store error is an error: nothing is signed.
func (a *Authority) signingKey() (jwk.Key, error) {
	now := time.Now()
	if _, err := a.checkKeys(now); err != nil {
		return nil, err
	}
	a.keyMu.Lock()
	next, key := a.keys.Next, a.tokenKey
	a.keyMu.Unlock()
	if next == nil || now.Before(next.ActiveFrom) {
		return key, nil
	}
	if err := a.promote(now); err != nil {
		return nil, err
	}
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	return a.tokenKey, nil
}

// checkKeys reloads the keyring if its version was not compared within
// keyCheckEvery; checked says whether it was compared now.
func (a *Authority) checkKeys(now time.Time) (checked bool, err error) {
	a.keyMu.Lock()
	checked = now.Sub(a.keysChecked) >= keyCheckEvery
	if checked {
		a.keysChecked = now // the others of this second use the copy
	}
	a.keyMu.Unlock()
	if !checked {
		return false, nil
	}
	return true, a.reloadKeys()
}

// promote makes the next key current once it is due, in a conditional
// write of the keyring (retried from a fresh read: a replica that finds it
// done by another only reloads), then publishes the new key set.
func (a *Authority) promote(now time.Time) error {
	a.rotateMu.Lock()
	defer a.rotateMu.Unlock()
	promoted := ""
	err := retry(func() error {
		promoted = ""
		var kr keyring
		ver, err := a.Store.GetDocVersion(docKeyring, keyringID, &kr)
		if err != nil {
			return fmt.Errorf("read the token keyring: %w", err)
		}
		if kr.Next == nil || now.Before(kr.Next.ActiveFrom) {
			return nil
		}
		prev := kr.Current
		prev.RetiredAt = now
		kr = keyring{Current: *kr.Next, Prev: &prev}
		if err := a.Store.CommitDocs(nil, store.DocWrite{Kind: docKeyring, ID: keyringID, Value: kr, ExpectVersion: ver}); err != nil {
			return err
		}
		promoted = recKid(kr.Current)
		return nil
	})
	if err != nil {
		return fmt.Errorf("promote the next token key: %w", err)
	}
	if promoted != "" {
		a.log.Info("token key promoted", "kid", promoted)
	}
	if err := a.reloadKeys(); err != nil {
		return err
	}
	if err := a.publishIssuer(); err != nil {
		return fmt.Errorf("publish the promoted token key: %w", err)
	}
	return nil
}

// publishIssuer puts the published token keys into the feed (the issuer
// record gateways trust), unless they are there already. The record is
// written on condition that it is as read and that the keyring is still
// the version its keys were read from (the keyring is written back as
// read, in the same commit, to carry that condition): a replica holding
// an older keyring never overwrites a newer key set.
func (a *Authority) publishIssuer() error {
	return retry(func() error {
		var kr keyring
		ver, err := a.Store.GetDocVersion(docKeyring, keyringID, &kr)
		if err != nil {
			return fmt.Errorf("read the token keyring: %w", err)
		}
		set, err := publicSet(a.publicKeys(kr, time.Now()))
		if err != nil {
			return err
		}
		j, err := json.Marshal(set)
		if err != nil {
			return err
		}
		cur, err := a.Store.Issuers()
		if err != nil {
			return err
		}
		var rev uint64
		for _, is := range cur {
			if is.Issuer != a.cfg.URL {
				continue
			}
			if jsonEqual(is.JWKS, j) {
				return nil
			}
			rev = is.Rev
		}
		b := &store.Batch{Issuers: []store.Issuer{{Issuer: a.cfg.URL, JWKS: j}},
			Docs: []store.DocWrite{{Kind: docKeyring, ID: keyringID, Value: kr, ExpectVersion: ver}}}
		_, err = a.Apply(b.ExpectRev(store.IssuerKey(a.cfg.URL), rev), "system")
		return err
	})
}

// ownKeySet is every published token key, for verifying this authority's
// tokens (from the copy: a key rotated in at another replica is in it
// since the commit that published it).
func (a *Authority) ownKeySet() (jwk.Set, error) {
	a.keyMu.Lock()
	kr := a.keys
	a.keyMu.Unlock()
	return publicSet(a.publicKeys(kr, time.Now()))
}

// parseOwnToken verifies raw with the published token keys. A token that
// none of the copy's keys verifies makes the copy be compared with the
// store (at most once a second, as signing does) and is tried again: with
// a store whose Watch reports other replicas' commits a little later, a
// key just rotated in there may not be in the copy yet.
func (a *Authority) parseOwnToken(raw string) (jwt.Token, error) {
	set, err := a.ownKeySet()
	if err != nil {
		return nil, err
	}
	tok, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
	if err == nil {
		return tok, nil
	}
	if checked, rerr := a.checkKeys(time.Now()); !checked || rerr != nil {
		return nil, err
	}
	if set, err = a.ownKeySet(); err != nil {
		return nil, err
	}
	return jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
}
