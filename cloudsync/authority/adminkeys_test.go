package authority_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// Issue 15: one shared admin token and no record of who acted. Admin API
// keys have names, several at once, are revocable and kept as hashes; the
// admin token is the key "bootstrap"; each change made with a key carries
// its name in the change log.
func TestAdminKeys(t *testing.T) {
	f := newFixture(t)
	add := func(tok, name string) (int, map[string]any) {
		code, body := f.do("POST", "/admin/v1/admin-keys", tok, "application/json", `{"name":"`+name+`"}`, nil)
		var m map[string]any
		_ = json.Unmarshal([]byte(body), &m)
		return code, m
	}
	code, m := add(adminToken, "ops-alice")
	alice, _ := m["key"].(string)
	if code != 201 || !strings.HasPrefix(alice, "edgeid_ak_") || len(alice) < 50 || m["created_by"] != "admin:bootstrap" {
		t.Fatalf("add ops-alice: %d %v", code, m)
	}
	code, m = add(alice, "ci-deploy")
	ci, _ := m["key"].(string)
	if code != 201 || ci == "" || ci == alice || m["created_by"] != "admin:ops-alice" {
		t.Fatalf("add ci-deploy with alice's key: %d %v", code, m)
	}
	for name, want := range map[string]int{"ops-alice": 409, "bootstrap": 400, "Bad Name": 400, "": 400, "a/b": 400} {
		if code, m := add(adminToken, name); code != want {
			t.Errorf("add %q: %d %v, want %d", name, code, m, want)
		}
	}

	// Each key acts under its own name, recorded with the change.
	b, _ := json.Marshal(store.Batch{Classes: demo.Classes()})
	if code, body := f.do("POST", "/admin/v1/import", alice, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import with alice's key: %d %s", code, body)
	}
	dev, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive}}})
	if code, body := f.do("POST", "/admin/v1/import", ci, "application/json", string(dev), nil); code != 200 {
		t.Fatalf("import with ci's key: %d %s", code, body)
	}
	if code, body := f.do("POST", "/admin/v1/devices/dev-1/suspend", adminToken, "", "", nil); code != 200 {
		t.Fatalf("suspend with the bootstrap key: %d %s", code, body)
	}
	es, err := f.a.Store.LogSince(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var who []string
	for _, e := range es {
		if len(e.Batch.Issuers) == 0 { // the authority's own key set ("system") comes first
			who = append(who, e.By)
		}
	}
	if strings.Join(who, ",") != "admin:ops-alice,admin:ci-deploy,admin:bootstrap" {
		t.Fatalf("change log by %q", who)
	}
	code, body := f.do("GET", "/admin/v1/changes", ci, "", "", nil)
	var cs []authority.ChangeInfo
	if code != 200 || json.Unmarshal([]byte(body), &cs) != nil || len(cs) != 4 || cs[0].By != "system" ||
		cs[2].By != "admin:ci-deploy" || cs[2].Records["devices"][0] != "dev-1" || cs[2].At.IsZero() {
		t.Fatalf("GET /admin/v1/changes: %d %s", code, body)
	}
	if code, body := f.do("GET", "/admin/v1/changes?from=3&limit=1", ci, "", "", nil); code != 200 || !strings.Contains(body, `"rev":4,"by":"admin:bootstrap"`) {
		t.Fatalf("GET /admin/v1/changes?from=3: %d %s", code, body)
	}
	if code, _ := f.do("GET", "/admin/v1/changes?limit=x", ci, "", "", nil); code != 400 {
		t.Errorf("bad limit: %d", code)
	}

	// The listing: names, when, by whom, last use; never a key or its hash.
	code, body = f.do("GET", "/admin/v1/admin-keys", ci, "", "", nil)
	var ks []authority.AdminKeyInfo
	if code != 200 || json.Unmarshal([]byte(body), &ks) != nil || len(ks) != 3 {
		t.Fatalf("list: %d %s", code, body)
	}
	if ks[0].Name != "bootstrap" || !ks[0].Configured || ks[1].Name != "ci-deploy" || ks[2].Name != "ops-alice" ||
		ks[2].CreatedBy != "admin:bootstrap" || time.Since(ks[2].Created) > time.Minute || ks[2].LastUsed.IsZero() || ks[0].LastUsed.IsZero() {
		t.Fatalf("list: %+v", ks)
	}
	if strings.Contains(body, alice) || strings.Contains(body, ci) || strings.Contains(body, "sha256") {
		t.Fatalf("the listing shows a key or its hash: %s", body)
	}
	// At rest only hashes; no key in the log.
	err = f.a.Store.ListDocs("admin-key", func(id string, raw []byte) error {
		if strings.Contains(string(raw), alice) || strings.Contains(string(raw), ci) || strings.Contains(string(raw), "edgeid_ak_") {
			t.Errorf("admin key %s stored in the clear: %s", id, raw)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if logs := f.logs.String(); strings.Contains(logs, alice) || strings.Contains(logs, ci) || strings.Contains(logs, adminToken) {
		t.Fatal("a key is in the log")
	}

	// Revoked: refused at once; the others keep working.
	if code, body := f.do("DELETE", "/admin/v1/admin-keys/ops-alice", ci, "", "", nil); code != 200 {
		t.Fatalf("revoke ops-alice: %d %s", code, body)
	}
	if code, _ := f.do("GET", "/admin/v1/devices", alice, "", "", nil); code != 401 {
		t.Errorf("revoked key: %d, want 401", code)
	}
	if code, _ := f.do("GET", "/admin/v1/devices", ci, "", "", nil); code != 200 {
		t.Errorf("ci-deploy after ops-alice was revoked: %d", code)
	}
	if code, _ := f.do("DELETE", "/admin/v1/admin-keys/ops-alice", ci, "", "", nil); code != 404 {
		t.Errorf("revoke again: %d, want 404", code)
	}
	if code, _ := f.do("DELETE", "/admin/v1/admin-keys/bootstrap", ci, "", "", nil); code != 400 {
		t.Errorf("revoke bootstrap: %d, want 400 (it is configuration)", code)
	}
	if !strings.Contains(f.logs.String(), `msg="admin key revoked" by=admin:ci-deploy key=ops-alice`) {
		t.Errorf("revocation not logged with who: %s", f.logs.String())
	}
	// A name can be used again: a new key, the old one still refused.
	if code, m := add(ci, "ops-alice"); code != 201 || m["key"] == alice {
		t.Fatalf("add ops-alice again: %d %v", code, m)
	}
	if code, _ := f.do("GET", "/admin/v1/devices", alice, "", "", nil); code != 401 {
		t.Errorf("the former ops-alice key: %d, want 401", code)
	}
}

// An admin key list that cannot be read refuses (500), never lets a key in.
func TestAdminKeysFailClosed(t *testing.T) {
	f := newFixture(t)
	_, body := f.do("POST", "/admin/v1/admin-keys", adminToken, "application/json", `{"name":"ops"}`, nil)
	var m map[string]string
	_ = json.Unmarshal([]byte(body), &m)
	if err := f.a.Store.PutDoc("admin-key", "zz-broken", "not a key record"); err != nil {
		t.Fatal(err)
	}
	if code, body := f.do("GET", "/admin/v1/devices", m["key"], "", "", nil); code != 500 || !strings.Contains(body, "server_error") {
		t.Fatalf("admin keys unreadable: %d %s, want 500", code, body)
	}
	if code, _ := f.do("GET", "/admin/v1/devices", "edgeid_ak_guess", "", "", nil); code != 500 {
		t.Fatalf("admin keys unreadable, wrong key: %d, want 500", code)
	}
}
