package authority_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync"
	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/store"
)

// Issue 16, "also found": read-modify-writes that overwrote what changed
// between their read and their write. The rule now: a read-modify-write of
// a record is one conditional commit. These tests race the authority's
// changes against each other with many goroutines and check what must
// hold whatever the interleaving.

// setDevice writes d as the admin API would (a blind import).
func (f *fixture) setDevice(d store.Device) {
	f.t.Helper()
	if _, err := f.a.Apply(&store.Batch{Devices: []store.Device{d}}, "test"); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) device(id string) store.Device {
	f.t.Helper()
	d, err := f.a.Store.Device(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// A rename from the owner's page never brings a revoked device back: many
// renames race a revocation, round after round; when everything has
// returned the device is revoked (the issue: the page read the device, the
// admin revoked it, the page wrote the whole record back, active).
func TestRenameCannotUndoRevocation(t *testing.T) {
	f := newFixture(t)
	f.classes()
	alice := f.webUser("alice")
	csrf := alice.csrf()
	const rounds, renamers = 20, 8
	for round := range rounds {
		f.setDevice(store.Device{ID: "thermo-1", Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
		var wg sync.WaitGroup
		start, stop := make(chan struct{}), make(chan struct{})
		for i := range renamers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					// No rev: the handler reads the device itself, the
					// window this race is about.
					code, _ := alice.post("/devices/thermo-1/rename", url.Values{"csrf": {csrf}, "name": {fmt.Sprintf("r%d-%d-%d", round, i, n)}})
					if code != 200 && code != 409 {
						t.Errorf("rename: %d", code)
						return
					}
				}
			}()
		}
		close(start)
		time.Sleep(5 * time.Millisecond)
		if _, err := f.a.RevokeDevice("thermo-1", "lost", "admin:test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		close(stop)
		wg.Wait()
		if d := f.device("thermo-1"); d.Status != store.DeviceRevoked {
			t.Fatalf("round %d: after a revocation raced renames the device is %s; want revoked", round, d.Status)
		}
	}
}

var revRE = regexp.MustCompile(`action="/devices/thermo-1/rename">.*?name="rev" value="(\d+)"`)

// The rename form carries the device as the page showed it: the admin
// revokes the device after the owner's page was shown, the owner renames
// from that page, and the rename is refused (409, "changed meanwhile");
// the device stays revoked and keeps its name. Renamed from a fresh page,
// it keeps its revocation.
func TestStaleRenameAfterRevokeIsRefused(t *testing.T) {
	f := newFixture(t)
	f.classes()
	alice := f.webUser("alice")
	f.setDevice(store.Device{ID: "thermo-1", Name: "Kitchen", Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
	_, page, csrf := alice.get("/devices")
	m := revRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the rename form carries no rev:\n%s", page)
	}
	if _, err := f.a.RevokeDevice("thermo-1", "stolen", "admin:test"); err != nil {
		t.Fatal(err)
	}
	code, body := alice.post("/devices/thermo-1/rename", url.Values{"csrf": {csrf}, "rev": {m[1]}, "name": {"Stale"}})
	if code != 409 || !strings.Contains(body, "changed meanwhile") {
		t.Fatalf("rename from the page shown before the revocation: %d, want 409 saying the device changed\n%s", code, body)
	}
	if d := f.device("thermo-1"); d.Status != store.DeviceRevoked || d.Name != "Kitchen" {
		t.Fatalf("after the stale rename: %+v", d)
	}
	_, page, _ = alice.get("/devices")
	m = revRE.FindStringSubmatch(page)
	if code, _ := alice.post("/devices/thermo-1/rename", url.Values{"csrf": {csrf}, "rev": {m[1]}, "name": {"Fresh"}}); code != 200 {
		t.Fatalf("rename from a fresh page: %d", code)
	}
	if d := f.device("thermo-1"); d.Status != store.DeviceRevoked || d.Name != "Fresh" {
		t.Fatalf("after the fresh rename: %+v", d)
	}
}

// Suspending, unpairing and pairing a device race its revocation: each
// change is made on the device as it is when it commits, so the
// revocation stays, and suspending a revoked device is refused.
func TestDeviceChangesKeepRevocation(t *testing.T) {
	f := newFixture(t)
	f.classes()
	for round := range 20 {
		id := fmt.Sprintf("dev-%d", round)
		f.setDevice(store.Device{ID: id, Class: "thermostat", Owner: "alice", Status: store.DeviceActive})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range 10 {
					if _, err := f.a.SetDeviceStatus(id, store.DeviceSuspended, "admin:test"); err != nil && !errors.Is(err, authority.ErrDeviceRevoked) {
						t.Errorf("suspend: %v", err)
					}
				}
			}()
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_ = f.a.Unpair(id, "alice") // or not: paired to nobody by then is fine too
		}()
		go func() {
			defer wg.Done()
			<-start
			if _, err := f.a.RevokeDevice(id, "stolen", "admin:test"); err != nil {
				t.Errorf("revoke: %v", err)
			}
		}()
		close(start)
		wg.Wait()
		if d := f.device(id); d.Status != store.DeviceRevoked || d.Owner != "" {
			t.Fatalf("round %d: device %s, owner %q; want revoked and unpaired", round, d.Status, d.Owner)
		}
	}
	if _, err := f.a.SetDeviceStatus("dev-0", store.DeviceSuspended, "admin:test"); !errors.Is(err, authority.ErrDeviceRevoked) {
		t.Fatalf("suspending a revoked device: %v", err)
	}
	if code, body := f.do("POST", "/admin/v1/devices/dev-0/suspend", adminToken, "", "", nil); code != 409 {
		t.Fatalf("suspend a revoked device through the API: %d %s", code, body)
	}
	if code, body := f.do("POST", "/admin/v1/devices/dev-0/activate", adminToken, "", "", nil); code != 200 || f.device("dev-0").Status != store.DeviceActive {
		t.Fatalf("activate it (the explicit way back): %d %s", code, body)
	}
}

// Of many registrations of one name at once on the register page, one is
// told "Account created" and its password logs in; every other is told the
// name is taken, and its password does not log in.
func TestConcurrentRegistrationsOfOneName(t *testing.T) {
	f := newFixture(t)
	l := authority.DefaultLimits()
	l.Register = authority.Rate{Every: time.Millisecond, Burst: 1000}
	srv := site(t, f, l)
	const n = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	created := make(chan int, n)
	var taken atomic.Int64
	for i := range n {
		b := f.browserAt(srv.URL, "127.0.0.1")
		_, _, csrf := b.get("/register")
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, body := b.post("/register", url.Values{"csrf": {csrf}, "username": {"alice"}, "email": {"alice@example.com"}, "password": {fmt.Sprintf("password number %d", i)}})
			switch {
			case code == 200 && strings.Contains(body, "Account created"):
				created <- i
			case code == 422 && strings.Contains(body, "That name is taken"):
				taken.Add(1)
			default:
				t.Errorf("registration %d: %d\n%s", i, code, body)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(created)
	var winners []int
	for i := range created {
		winners = append(winners, i)
	}
	if len(winners) != 1 || taken.Load() != n-1 {
		t.Fatalf("%d told \"Account created\" (%v), %d told the name is taken; want exactly one created", len(winners), winners, taken.Load())
	}
	b := f.browserAt(srv.URL, "127.0.0.2")
	b.login("alice", fmt.Sprintf("password number %d", winners[0]), 200)
	other := (winners[0] + 1) % n
	f.browserAt(srv.URL, "127.0.0.3").login("alice", fmt.Sprintf("password number %d", other), 401)
}

// RegisterOwner (the demo's and scripts' registration) and AddMember (a
// household member) likewise: one of 32 at once succeeds, with its
// password.
func TestConcurrentRegisterOwnerAndAddMember(t *testing.T) {
	f := newFixture(t)
	f.classes()
	const n = 32
	race := func(what string, try func(i int) error, isTaken func(error) bool) int {
		var wg sync.WaitGroup
		start := make(chan struct{})
		won := make(chan int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				switch err := try(i); {
				case err == nil:
					won <- i
				case !isTaken(err):
					t.Errorf("%s %d: %v", what, i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(won)
		var ws []int
		for i := range won {
			ws = append(ws, i)
		}
		if len(ws) != 1 {
			t.Fatalf("%s: %d of %d succeeded (%v), want exactly 1", what, len(ws), n, ws)
		}
		return ws[0]
	}
	w := race("RegisterOwner", func(i int) error {
		return f.a.RegisterOwner("bob", "bob@example.com", fmt.Sprintf("password number %d", i))
	}, func(err error) bool { return errors.Is(err, authority.ErrOwnerTaken) })
	f.browser().login("bob", fmt.Sprintf("password number %d", w), 200)

	if err := f.a.RegisterOwner("carol", "carol@example.com", webPassword); err != nil {
		t.Fatal(err)
	}
	w = race("AddMember", func(i int) error {
		_, err := f.a.AddMember("carol", "kid", "Kid", fmt.Sprintf("password number %d", i), "owner carol")
		return err
	}, func(err error) bool {
		var fe *authority.FieldError
		return errors.As(err, &fe) && fe.Field == "username"
	})
	f.browser().login("kid", fmt.Sprintf("password number %d", w), 200)
	f.browser().login("kid", fmt.Sprintf("password number %d", (w+1)%n), 401)
}

var jtiSeq atomic.Int64

// pollOnce polls the device code in process, with a client assertion of
// its own (a unique jti: the pollers run at the same moment).
func (d *keyDevice) pollOnce(deviceCode string) (authority.TokenResponse, error) {
	now := time.Now()
	aud := d.f.srv.URL + "/oauth/token"
	a, _ := d.key.Mint(map[string]any{"iss": d.id, "sub": d.id, "aud": aud, "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprintf("poll-%d", jtiSeq.Add(1))}, nil)
	return d.f.a.PollDeviceCode(d.id, authority.ClientAssertionType, a, aud, nil, deviceCode)
}

// A pairing approved has its poll approved: the device polls (too fast,
// from several goroutines: every poll rewrites the pairing's poll time)
// while the owner approves. No poll writes its older read of the pairing
// over the approval: once DecidePairing has returned, the device gets its
// token, exactly once.
func TestApprovalSurvivesConcurrentPolls(t *testing.T) {
	f := newFixture(t)
	f.classes()
	for round := range 6 {
		d := f.keyDevice(fmt.Sprintf("speaker-%d", round))
		dc, uc := d.start(t)
		var wg sync.WaitGroup
		var tokens atomic.Int64
		decided := make(chan struct{})
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := time.Time{}
				for {
					if deadline.IsZero() {
						select {
						case <-decided:
							deadline = time.Now().Add(2 * time.Second)
						default:
						}
					} else if time.Now().After(deadline) {
						return
					}
					_, err := d.pollOnce(dc)
					var oe *authority.OAuthError
					switch {
					case err == nil:
						tokens.Add(1)
						return
					case errors.As(err, &oe) && (oe.Code == "authorization_pending" || oe.Code == "slow_down"):
					case errors.As(err, &oe) && oe.Code == "invalid_grant":
						return // taken by another poller
					default:
						t.Errorf("poll: %v", err)
						return
					}
				}
			}()
		}
		time.Sleep(10 * time.Millisecond)
		if err := f.a.DecidePairing(uc, "alice", true); err != nil {
			t.Fatal(err)
		}
		close(decided)
		wg.Wait()
		if n := tokens.Load(); n != 1 {
			t.Fatalf("round %d: %d tokens after the approval, want 1 (a poll wrote its pending read over the approval)", round, n)
		}
		if got := f.device(d.id); got.Owner != "alice" {
			t.Fatalf("round %d: device owner %q", round, got.Owner)
		}
	}
}

// Of two accounts approving the code of an unowned device at once, one
// pairs it; the other is refused; the device's token acts for the winner.
func TestConcurrentApprovalsOfOneCode(t *testing.T) {
	f := newFixture(t)
	f.classes()
	d := f.keyDevice("speaker-1")
	dc, uc := d.start(t)
	owners := []string{"alice", "bob", "carol", "dave"}
	var wg sync.WaitGroup
	start := make(chan struct{})
	won := make(chan string, len(owners))
	for _, o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			switch err := f.a.DecidePairing(uc, o, true); {
			case err == nil:
				won <- o
			case errors.Is(err, authority.ErrUserCode), errors.Is(err, authority.ErrPairedElsewhere):
			default:
				t.Errorf("%s approves: %v", o, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(won)
	var ws []string
	for o := range won {
		ws = append(ws, o)
	}
	if len(ws) != 1 {
		t.Fatalf("approvals that succeeded: %v, want exactly one", ws)
	}
	if got := f.device("speaker-1").Owner; got != ws[0] {
		t.Fatalf("device owner %q, winner %q", got, ws[0])
	}
	code, m := d.poll(dc)
	if code != 200 || decodeClaims(t, m["access_token"].(string))["sub"] != ws[0] {
		t.Fatalf("poll: %d %v, want a token acting for %s", code, m, ws[0])
	}
}

// Of several approvals of one share request at once, one makes a share;
// the others find the request decided.
func TestConcurrentApprovalsOfOneShareRequest(t *testing.T) {
	u := newUMA(t, nil)
	r, err := u.a.SubmitRequest("bob", store.GranteeUser, "app-1", []cloudsync.PermissionRequest{{ResourceID: "thermo-1/telemetry", ResourceScopes: []string{"sub"}}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	start := make(chan struct{})
	var ok atomic.Int64
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := u.a.DecideRequest("alice", r.ID, true, time.Time{}, nil, "owner alice")
			var fe *authority.FieldError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &fe) && fe.Field == "request":
			default:
				t.Errorf("approve: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	shares, _ := u.a.SharesBy("alice")
	got, _ := u.a.ShareRequestByID(r.ID)
	if ok.Load() != 1 || len(shares) != 1 || got.State != authority.RequestApproved || got.Share != shares[0].ID {
		t.Fatalf("%d approvals succeeded, %d shares, request %+v; want one approval, its share named by the request", ok.Load(), len(shares), got)
	}
}

// An account disabled while its friends share with it keeps no share:
// shares made from a read of it as active either commit before the
// disabling (and are deleted with it) or are refused.
func TestDisableUserRacesNewShares(t *testing.T) {
	u := newUMA(t, nil)
	for round := range 10 {
		if _, err := u.a.Apply(&store.Batch{Users: []store.User{{ID: "bob", Status: store.UserActive}}}, "test"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for range 5 {
					_, err := u.a.CreateShare("alice", authority.ShareInput{Devices: []string{"thermo-1"}, Groups: map[string][]string{"telemetry": {"sub"}},
						Grantee: "bob", GranteeKind: store.GranteeUser}, "owner alice")
					var fe *authority.FieldError
					if err != nil && !(errors.As(err, &fe) && fe.Field == "grantee") {
						t.Errorf("share: %v", err)
						return
					}
				}
			}()
		}
		close(start)
		time.Sleep(time.Duration(round%4) * time.Millisecond)
		if err := u.a.DisableUser("bob", "test", "admin:test"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if left, _ := u.a.SharesWith("bob"); len(left) != 0 {
			t.Fatalf("round %d: %d shares to bob after he was disabled", round, len(left))
		}
	}
}

// A device CSV uploaded while the device is revoked does not write back the
// older read of it: the commit expects each device as read (409 when one
// changed; sending the list again applies it to the device as it is).
func TestCSVImportExpectsTheDevicesItRead(t *testing.T) {
	f := newFixture(t)
	f.classes()
	c := client.HTTPClient(f.fp) // one client: its connections are kept
	for round := range 8 {
		f.setDevice(store.Device{ID: "thermo-1", Class: "thermostat", Status: store.DeviceActive})
		var wg sync.WaitGroup
		start, stop := make(chan struct{}), make(chan struct{})
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					csv := fmt.Sprintf("id,class,serial\nthermo-1,thermostat,SN-%d-%d-%d\n", round, i, n)
					req, _ := http.NewRequest("POST", f.srv.URL+"/admin/v1/import", strings.NewReader(csv))
					req.Header.Set("Authorization", "Bearer "+adminToken)
					req.Header.Set("Content-Type", "text/csv")
					resp, err := c.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 && resp.StatusCode != 409 {
						t.Errorf("import: %d %s", resp.StatusCode, body)
						return
					}
				}
			}()
		}
		close(start)
		time.Sleep(5 * time.Millisecond)
		if _, err := f.a.RevokeDevice("thermo-1", "test", "admin:test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		close(stop)
		wg.Wait()
		if d := f.device("thermo-1"); d.Status != store.DeviceRevoked {
			t.Fatalf("round %d: the device is %s after CSV uploads raced its revocation", round, d.Status)
		}
	}
}
