package authority

import (
	"encoding/json"
	"errors"
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

const docKeyring = "keyring"

func (a *Authority) loadKeyring() error {
	var kr keyring
	err := a.Store.GetDoc(docKeyring, "token", &kr)
	if errors.Is(err, store.ErrNotFound) {
		k, err := a.loadKey("token")
		if err != nil {
			return err
		}
		raw, _ := json.Marshal(k)
		kr = keyring{Current: keyRec{Key: raw, ActiveFrom: time.Now()}}
		if err := a.Store.PutDoc(docKeyring, "token", kr); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	a.keys = kr
	return a.useCurrent()
}

func (a *Authority) useCurrent() error {
	k, err := jwk.ParseKey(a.keys.Current.Key)
	if err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	a.tokenKey = k
	return nil
}

// publicKeys are the keys gateways must trust now: current, next, and the
// previous one while its tokens may still be valid.
func (a *Authority) publicKeys() []json.RawMessage {
	out := []json.RawMessage{a.keys.Current.Key}
	if a.keys.Next != nil {
		out = append(out, a.keys.Next.Key)
	}
	if p := a.keys.Prev; p != nil && time.Since(p.RetiredAt) < a.cfg.TokenTTL+time.Minute {
		out = append(out, p.Key)
	}
	return out
}

// Rotate makes and publishes the next token key; it signs from PublishAhead on.
func (a *Authority) Rotate(who string) (kid string, signsFrom time.Time, err error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.keys.Next != nil {
		k, _ := jwk.ParseKey(a.keys.Next.Key)
		return mustKid(k), a.keys.Next.ActiveFrom, nil
	}
	k, err := a.newKey("token")
	if err != nil {
		return "", time.Time{}, err
	}
	raw, _ := json.Marshal(k)
	a.keys.Next = &keyRec{Key: raw, ActiveFrom: time.Now().Add(a.cfg.KeyPublishAhead)}
	if err := a.Store.PutDoc(docKeyring, "token", a.keys); err != nil {
		return "", time.Time{}, err
	}
	a.log.Info("token key rotation started", "by", who, "next_kid", mustKid(k), "signs_from", a.keys.Next.ActiveFrom)
	if err := a.publishIssuerLocked(); err != nil {
		return "", time.Time{}, err
	}
	return mustKid(k), a.keys.Next.ActiveFrom, nil
}

// signingKey returns the key to sign with now, promoting the next key once
// it has been published long enough.
func (a *Authority) signingKey() (jwk.Key, error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if n := a.keys.Next; n != nil && !time.Now().Before(n.ActiveFrom) {
		prev := a.keys.Current
		prev.RetiredAt = time.Now()
		a.keys = keyring{Current: *n, Prev: &prev}
		if err := a.Store.PutDoc(docKeyring, "token", a.keys); err != nil {
			return nil, err
		}
		if err := a.useCurrent(); err != nil {
			return nil, err
		}
		a.log.Info("token key promoted", "kid", mustKid(a.tokenKey))
		if err := a.publishIssuerLocked(); err != nil {
			return nil, err
		}
	}
	return a.tokenKey, nil
}

// ownKeySet is every published token key, for verifying this authority's tokens.
func (a *Authority) ownKeySet() (jwk.Set, error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	set := jwk.NewSet()
	for _, raw := range a.publicKeys() {
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

func (a *Authority) parseOwnToken(raw string) (jwt.Token, error) {
	set, err := a.ownKeySet()
	if err != nil {
		return nil, err
	}
	return jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(false))
}
