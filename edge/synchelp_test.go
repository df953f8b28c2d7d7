package edge_test

import (
	"encoding/base64"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/edge/demo"
)

func base64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
func base64Encode(b []byte) string          { return base64.RawURLEncoding.EncodeToString(b) }

// signFeed signs payload as a feed batch with a key that is not the authority's.
func signFeed(t *testing.T, iss *demo.Issuer, payload string) string {
	h := jws.NewHeaders()
	_ = h.Set(jws.TypeKey, cloudsync.FeedType)
	out, err := jws.Sign([]byte(payload), jws.WithKey(iss.Alg, iss.Key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
