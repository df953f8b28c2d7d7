package dpop

import (
	"crypto/elliptic"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeReplay is a ReplayStore that records its calls.
type fakeReplay struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	calls []string
	err   error
}

func (f *fakeReplay) Seen(id string, until time.Time) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, id)
	if f.err != nil {
		return false, f.err
	}
	if _, ok := f.seen[id]; ok {
		return true, nil
	}
	f.seen[id] = until
	return false, nil
}

// With Options.Replay, proof ids go to that store (called once per proof
// used, with the key's thumbprint and the jti, until the proof ages out),
// not the Verifier's memory; a replay it reports is refused, and so is
// every proof while it fails (fail closed), with an error that is not the
// client's (*Error) but wraps the store's.
func TestCustomReplayStore(t *testing.T) {
	c := &clock{t0}
	_, k := newEC(t, elliptic.P256())
	rs := &fakeReplay{seen: map[string]time.Time{}}
	v := verifier(c, Options{Replay: rs, ReplayCapacity: 1})
	req := Request{Method: "POST", URL: tokenURL}
	p, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	got, err := v.Verify(p, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.calls) != 1 || rs.calls[0] != got.JKT+"\x00"+got.JTI {
		t.Fatalf("store calls %q, want one with the thumbprint and jti", rs.calls)
	}
	if until := rs.seen[rs.calls[0]]; !until.Equal(t0.Add(65 * time.Second)) {
		t.Fatalf("kept until %v, want iat+MaxAge+Skew %v", until, t0.Add(65*time.Second))
	}
	if v.Held() != 0 {
		t.Fatalf("%d ids held in memory beside the store", v.Held())
	}
	// A second proof passes although ReplayCapacity is 1: the memory is unused.
	q, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	if _, err := v.Verify(q, req); err != nil {
		t.Fatalf("a second proof: %v", err)
	}
	_, err = v.Verify(p, req)
	wantErr(t, err, CodeInvalidProof, "replayed")

	boom := errors.New("database unreachable")
	rs.err = boom
	r, _ := Sign(k, "POST", tokenURL, "", "", c.now)
	_, err = v.Verify(r, req)
	var de *Error
	if err == nil || !errors.Is(err, boom) || errors.As(err, &de) || !strings.Contains(err.Error(), "replay store") {
		t.Fatalf("store failure: %v, want a refusal wrapping the store's error", err)
	}
	pf, err := v.Check(r, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Use(pf); !errors.Is(err, boom) {
		t.Fatalf("Use with a failing store: %v", err)
	}
	if n := len(rs.calls); n != 5 {
		t.Fatalf("%d store calls, want 5 (one per Verify or Use)", n)
	}
}
