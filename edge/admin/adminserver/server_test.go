package adminserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/store"
)

// fakeBackend answers the read routes with one of each and records writes.
type fakeBackend struct {
	mu      sync.Mutex
	kicks   []string
	imports int
	pairs   int
}

func (f *fakeBackend) Status(context.Context) (admin.Status, error) {
	return admin.Status{Gateway: "fake-gw", Sessions: 1}, nil
}
func (f *fakeBackend) Sessions(context.Context) ([]admin.Session, error) {
	return []admin.Session{{Transport: "mqtt", Device: "thermo-1"}}, nil
}
func (f *fakeBackend) Devices(_ context.Context, online bool) ([]admin.Device, error) {
	return []admin.Device{{Device: store.Device{ID: "thermo-1"}, Sessions: 1}}, nil
}
func (f *fakeBackend) Revocations(context.Context) ([]store.Revocation, error) { return nil, nil }
func (f *fakeBackend) Bridge(context.Context) ([]admin.BridgeRemote, error)    { return nil, nil }
func (f *fakeBackend) Kick(_ context.Context, device, subject, jti string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicks = append(f.kicks, device+subject+jti)
	return 1
}
func (f *fakeBackend) Import(_ context.Context, b *store.Batch) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imports++
	return 7, nil
}
func (f *fakeBackend) SyncNow(context.Context) error { return ErrNotEnrolled }
func (f *fakeBackend) OpenPairing(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pairs++
	return time.Now().Add(d)
}
func (f *fakeBackend) PairingUntil() time.Time { return time.Time{} }

func (f *fakeBackend) writes() (kicks, imports, pairs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.kicks), f.imports, f.pairs
}

// serve starts a server on a fresh socket whose callers all get role (the
// peer is this test process; role stands in for its groups).
func serve(t *testing.T, role Role) (*admin.Client, *fakeBackend) {
	t.Helper()
	dir, err := os.MkdirTemp("", "eidadm") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &fakeBackend{}
	s, err := New(Config{Socket: filepath.Join(dir, "admin.sock"), Group: "edgeid", ReadGroup: "edgeid-view", Backend: b,
		Role: func(p Peer) Role {
			if int(p.UID) != os.Getuid() || int(p.PID) != os.Getpid() {
				t.Errorf("peer %+v: want this process (uid %d, pid %d)", p, os.Getuid(), os.Getpid())
				return RoleNone
			}
			return role
		}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return admin.NewClient(filepath.Join(dir, "admin.sock")), b
}

// forbidden checks that err is a 403 whose message contains want.
func forbidden(t *testing.T, what string, err error, want string) {
	t.Helper()
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusForbidden || !strings.Contains(ae.Message, want) {
		t.Errorf("%s: %v, want 403 containing %q", what, err, want)
	}
}

var batch = json.RawMessage(`{"devices":[{"id":"d1","class":"thermostat","status":"active"}]}`)

// A caller in the read-only group lists status, sessions, devices and
// revocations, but kick, import, sync and pair are refused with 403 and
// never reach the gateway.
func TestAdminReadOnlyRoleListsButCannotWrite(t *testing.T) {
	c, b := serve(t, RoleRead)
	ctx := context.Background()
	if st, err := c.Status(ctx); err != nil || st.Gateway != "fake-gw" {
		t.Errorf("status: %+v %v", st, err)
	}
	if ss, err := c.Sessions(ctx); err != nil || len(ss) != 1 {
		t.Errorf("sessions: %+v %v", ss, err)
	}
	if ds, err := c.Devices(ctx, true); err != nil || len(ds) != 1 {
		t.Errorf("devices: %+v %v", ds, err)
	}
	if rs, err := c.Revocations(ctx); err != nil || rs == nil {
		t.Errorf("revocations: %+v %v (want an empty list)", rs, err)
	}
	if bs, err := c.Bridge(ctx); err != nil || bs == nil || len(bs) != 0 {
		t.Errorf("bridge: %+v %v (want an empty list)", bs, err)
	}
	_, err := c.Kick(ctx, admin.KickRequest{Device: "thermo-1"})
	forbidden(t, "kick", err, "POST /v1/kick changes the gateway: run as root or as a member of group edgeid (group edgeid-view may only read)")
	_, err = c.Import(ctx, batch)
	forbidden(t, "import", err, "POST /v1/import changes the gateway")
	_, err = c.SyncNow(ctx)
	forbidden(t, "sync", err, "POST /v1/sync changes the gateway")
	_, err = c.Pair(ctx, time.Minute)
	forbidden(t, "pair", err, "POST /v1/pair changes the gateway")
	if k, i, p := b.writes(); k+i+p != 0 {
		t.Errorf("a read-only caller reached the gateway: %d kicks, %d imports, %d pairings", k, i, p)
	}
}

// A caller with the write role lists and changes.
func TestAdminWriteRoleListsAndWrites(t *testing.T) {
	c, b := serve(t, RoleWrite)
	ctx := context.Background()
	if st, err := c.Status(ctx); err != nil || st.Gateway != "fake-gw" {
		t.Errorf("status: %+v %v", st, err)
	}
	if ss, err := c.Sessions(ctx); err != nil || len(ss) != 1 {
		t.Errorf("sessions: %+v %v", ss, err)
	}
	if ds, err := c.Devices(ctx, false); err != nil || len(ds) != 1 {
		t.Errorf("devices: %+v %v", ds, err)
	}
	if r, err := c.Kick(ctx, admin.KickRequest{Device: "thermo-1"}); err != nil || r.Kicked != 1 {
		t.Errorf("kick: %+v %v", r, err)
	}
	if r, err := c.Import(ctx, batch); err != nil || r.Rev != 7 || r.Records != 1 {
		t.Errorf("import: %+v %v", r, err)
	}
	if _, err := c.Pair(ctx, time.Minute); err != nil {
		t.Errorf("pair: %v", err)
	}
	var ae *admin.APIError
	if _, err := c.SyncNow(ctx); !errors.As(err, &ae) || ae.Code != http.StatusBadRequest || !strings.Contains(err.Error(), "not enrolled") {
		t.Errorf("sync on a gateway without an authority: %v, want 400 not enrolled", err)
	}
	// The request is still checked after the role: exactly one target.
	if _, err := c.Kick(ctx, admin.KickRequest{}); !errors.As(err, &ae) || ae.Code != http.StatusBadRequest {
		t.Errorf("kick without a target: %v, want 400", err)
	}
	if k, i, p := b.writes(); k != 1 || i != 1 || p != 1 {
		t.Errorf("writes reached the gateway: %d kicks, %d imports, %d pairings, want 1 each", k, i, p)
	}
}

// A caller in neither group may not even read, and is told what it needs;
// an unknown path is refused too rather than answered 404.
func TestAdminUnknownPeerRefused(t *testing.T) {
	c, b := serve(t, RoleNone)
	ctx := context.Background()
	want := "forbidden: run as root or as a member of group edgeid, or of group edgeid-view to read only"
	_, err := c.Status(ctx)
	forbidden(t, "status", err, want)
	_, err = c.Sessions(ctx)
	forbidden(t, "sessions", err, want)
	_, err = c.Devices(ctx, false)
	forbidden(t, "devices", err, want)
	_, err = c.Kick(ctx, admin.KickRequest{Device: "thermo-1"})
	forbidden(t, "kick", err, want)
	forbidden(t, "unknown path", c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil), want)
	if k, i, p := b.writes(); k+i+p != 0 {
		t.Errorf("an unknown peer reached the gateway: %d kicks, %d imports, %d pairings", k, i, p)
	}
}

// A request whose peer credentials could not be read is refused.
func TestAdminNoPeerCredentialsRefused(t *testing.T) {
	s := &Server{cfg: Config{Group: "edgeid"}, role: func(Peer) Role { return RoleWrite }, log: slog.New(slog.DiscardHandler)}
	s.routes = map[string]route{admin.PathStatus: {http.MethodGet, RoleRead, func(*http.Request) (any, error) { return "ok", nil }}}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, admin.PathStatus, nil))
	if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "could not read the caller's credentials") {
		t.Errorf("no peer: %d %s", w.Code, w.Body)
	}
}

// Groups gives roles from fake credentials: root and the write group
// write, the read group reads (primary or supplementary), anyone else nothing.
func TestAdminGroupsRole(t *testing.T) {
	sup := map[uint32][]string{1001: {"200"}, 1002: {"200", "100"}, 1003: {"100"}, 1004: {"300"}}
	lookups := 0
	g := Groups{WriteGID: 100, ReadGID: 200, Supplementary: func(uid uint32) ([]string, error) {
		lookups++
		if l, ok := sup[uid]; ok {
			return l, nil
		}
		return nil, errors.New("unknown user")
	}}
	for _, c := range []struct {
		name string
		g    Groups
		p    Peer
		want Role
	}{
		{"root", g, Peer{UID: 0, GID: 0}, RoleWrite},
		{"root without groups", Groups{WriteGID: -1, ReadGID: -1}, Peer{UID: 0, GID: 0}, RoleWrite},
		{"primary write group", g, Peer{UID: 1000, GID: 100}, RoleWrite},
		{"primary read group", g, Peer{UID: 1000, GID: 200}, RoleRead},
		{"supplementary read group", g, Peer{UID: 1001, GID: 1001}, RoleRead},
		{"supplementary write and read", g, Peer{UID: 1002, GID: 1002}, RoleWrite},
		{"primary read, supplementary write", g, Peer{UID: 1003, GID: 200}, RoleWrite},
		{"another group", g, Peer{UID: 1004, GID: 1004}, RoleNone},
		{"unknown user", g, Peer{UID: 65534, GID: 65534}, RoleNone},
		{"no write group", Groups{WriteGID: -1, ReadGID: 200, Supplementary: g.Supplementary}, Peer{UID: 1003, GID: 1003}, RoleNone},
		{"no groups at all", Groups{WriteGID: -1, ReadGID: -1, Supplementary: g.Supplementary}, Peer{UID: 1001, GID: 200}, RoleNone},
	} {
		if got := c.g.Role(c.p); got != c.want {
			t.Errorf("%s: %+v is %s, want %s", c.name, c.p, got, c.want)
		}
	}
	lookups = 0
	g.Role(Peer{UID: 1004, GID: 1004})
	if lookups != 1 {
		t.Errorf("%d group lookups for one request, want 1", lookups)
	}
}

// The default role function looks the groups up by name: this process (root
// here) may write; a group that does not exist gives nobody a role.
func TestAdminLookupGroups(t *testing.T) {
	g := LookupGroups("no-such-group-edgeid-test", "")
	if g.WriteGID != -1 || g.ReadGID != -1 {
		t.Errorf("missing groups resolved to %+v", g)
	}
	if os.Getuid() == 0 {
		if r := g.Role(Peer{UID: 0}); r != RoleWrite {
			t.Errorf("root is %s", r)
		}
	}
	if r := g.Role(Peer{UID: 65534, GID: 65534}); r != RoleNone {
		t.Errorf("nobody without groups is %s", r)
	}
}
