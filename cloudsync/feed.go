// Package cloudsync is the sync protocol between a gateway and its
// authority: the signed feed batches (a snapshot, then deltas by sequence
// number) and the enrollment and request-signing messages. The authority's
// server side lives in cloudsync/authority, the gateway's client in
// cloudsync/client.
package cloudsync

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/edgeid/edgeid/store"
)

// FeedType is the JWS typ of a feed batch, so a batch can never be taken for
// a token or anything else the authority signs.
const FeedType = "edgeid-feed+jws"

// Batch is one unit of the feed: the changes that take a gateway's store from
// sequence From to sequence To of the authority's epoch.
type Batch struct {
	// Gateway is the enrolled gateway the batch is for.
	Gateway string `json:"gw"`
	// Epoch names the authority's log; a new epoch needs a new snapshot.
	Epoch string `json:"epoch"`
	From  uint64 `json:"from"`
	To    uint64 `json:"to"`
	// Snapshot batches replace the gateway's whole store.
	Snapshot bool        `json:"snapshot,omitempty"`
	IssuedAt int64       `json:"iat"`
	Changes  store.Batch `json:"changes"`
}

// Sign returns the batch as a compact JWS signed with the feed key.
func Sign(b *Batch, key jwk.Key) (string, error) { return signFeed(b, FeedType, key) }

// signFeed signs v as a compact JWS of type typ with the feed key. The typ
// keeps the feed's kinds of message (batches, heartbeats) from being taken
// for one another or for anything else the authority signs.
func signFeed(v any, typ string, key jwk.Key) (string, error) {
	alg, ok := key.Algorithm()
	if !ok {
		return "", errors.New("feed key has no alg")
	}
	salg, ok := jwa.LookupSignatureAlgorithm(alg.String())
	if !ok {
		return "", fmt.Errorf("feed key alg %q is not a signature algorithm", alg)
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, typ)
	if kid, ok := key.KeyID(); ok {
		_ = h.Set(jws.KeyIDKey, kid)
	}
	out, err := jws.Sign(payload, jws.WithKey(salg, key, jws.WithProtectedHeaders(h)))
	return string(out), err
}

// Reject is why a gateway refuses a batch.
type Reject struct {
	Reason string // unsigned, bad_signature, wrong_gateway, wrong_epoch, rollback, gap, malformed
	Detail string
}

func (r *Reject) Error() string { return "feed batch refused: " + r.Reason + ": " + r.Detail }

// Verify checks a signed batch with the pinned feed key and returns it. It
// does not check the sequence: that needs the cursor (see Check).
func Verify(raw string, pinned jwk.Key) (*Batch, error) {
	var b Batch
	if err := verifyFeed(raw, FeedType, pinned, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// verifyFeed checks that raw is a compact JWS of type typ signed by the
// pinned feed key and decodes its payload into v.
func verifyFeed(raw, typ string, pinned jwk.Key, v any) error {
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil {
		return &Reject{"malformed", err.Error()}
	}
	if len(msg.Signatures()) != 1 {
		return &Reject{"unsigned", "want exactly one signature"}
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if got, _ := hdr.Type(); got != typ {
		return &Reject{"malformed", fmt.Sprintf("typ %q is not %s", got, typ)}
	}
	alg, _ := hdr.Algorithm()
	kalg, _ := pinned.Algorithm()
	if alg.String() != kalg.String() {
		return &Reject{"bad_signature", fmt.Sprintf("alg %q is not the pinned feed key's %q", alg, kalg)}
	}
	salg, _ := jwa.LookupSignatureAlgorithm(kalg.String())
	payload, err := jws.Verify([]byte(raw), jws.WithKey(salg, pinned))
	if err != nil {
		return &Reject{"bad_signature", "not signed by the pinned authority feed key"}
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return &Reject{"malformed", err.Error()}
	}
	return nil
}

// Check decides whether a verified batch may be applied on top of cursor by
// gateway gw: it must be for this gateway, from the cursor's epoch unless it
// is a snapshot, and continue exactly where the cursor stands.
func Check(b *Batch, gw string, cur store.Cursor) error {
	if b.Gateway != gw {
		return &Reject{"wrong_gateway", fmt.Sprintf("batch is for gateway %q, this is %q", b.Gateway, gw)}
	}
	if b.To < b.From || (!b.Snapshot && b.To != b.From+1) {
		return &Reject{"malformed", fmt.Sprintf("from %d to %d", b.From, b.To)}
	}
	if b.Snapshot {
		if b.Epoch == cur.Epoch && b.To < cur.Seq {
			return &Reject{"rollback", fmt.Sprintf("snapshot at %d is older than the cursor %d", b.To, cur.Seq)}
		}
		if b.IssuedAt < cur.SnapshotIssued {
			return &Reject{"rollback", fmt.Sprintf("snapshot issued at %d is older than the one applied (%d): replayed", b.IssuedAt, cur.SnapshotIssued)}
		}
		return nil
	}
	if b.Epoch != cur.Epoch {
		return &Reject{"wrong_epoch", fmt.Sprintf("batch of epoch %q on a store of epoch %q needs a snapshot first", b.Epoch, cur.Epoch)}
	}
	if b.To <= cur.Seq {
		return &Reject{"rollback", fmt.Sprintf("batch %d..%d is at or behind the cursor %d (replayed)", b.From, b.To, cur.Seq)}
	}
	if b.From != cur.Seq {
		return &Reject{"gap", fmt.Sprintf("batch starts at %d, the cursor is at %d", b.From, cur.Seq)}
	}
	return nil
}

// Cursor is where the store stands after applying b on top of prev.
func (b *Batch) Cursor(prev store.Cursor, now time.Time) store.Cursor {
	c := store.Cursor{Epoch: b.Epoch, Seq: b.To, SyncedAt: now, SnapshotIssued: prev.SnapshotIssued}
	if b.Snapshot {
		c.SnapshotIssued = b.IssuedAt
	}
	return c
}

func randomJTI() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewES256Key makes a fresh P-256 private key as a JWK with alg ES256, the
// kind of key feeds, heartbeats and gateway assertions are signed with.
func NewES256Key() (jwk.Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k, err := jwk.Import(priv)
	if err != nil {
		return nil, err
	}
	_ = k.Set(jwk.AlgorithmKey, jwa.ES256())
	return k, nil
}
