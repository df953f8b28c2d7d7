package edge_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The gateway wires admin.read_group to a read-only role: a member of that
// group (here nobody:nogroup) lists but may not kick or import, and a caller
// in neither group (uid 65533, no such user) is told which groups it needs.
// Root writes.
func TestAdminReadGroupOverSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: install Debian's curl (.ci/run does)")
	}
	g := startGateway(t, func(c *configT) { c.Admin.Group, c.Admin.ReadGroup = "no-such-group-edgeid-test", "nogroup" })
	sock := g.cfg.Admin.Socket
	// The socket is the admin group's; open it to all so the peer check decides.
	for _, p := range []string{filepath.Dir(sock), sock} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	call := func(uid, gid uint32, method, path, body string) string {
		t.Helper()
		args := []string{"-s", "-w", " HTTP %{http_code}", "--unix-socket", sock, "-X", method, "http://edgeid" + path}
		if body != "" {
			args = append(args, "-H", "Content-Type: application/json", "-d", body)
		}
		cmd := exec.Command(curl, args...)
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl as %d:%d: %v\n%s", uid, gid, err, out)
		}
		return string(out)
	}
	const nobody, nogroup = 65534, 65534
	for _, path := range []string{"/v1/status", "/v1/sessions", "/v1/devices", "/v1/revocations"} {
		if out := call(nobody, nogroup, "GET", path, ""); !strings.Contains(out, "HTTP 200") {
			t.Errorf("read-only GET %s: %s", path, out)
		}
	}
	kick := `{"device":"thermo-1"}`
	imp := `{"users":[{"id":"u1","status":"active"}]}`
	for path, body := range map[string]string{"/v1/kick": kick, "/v1/import": imp} {
		if out := call(nobody, nogroup, "POST", path, body); !strings.Contains(out, "HTTP 403") ||
			!strings.Contains(out, "changes the gateway") || !strings.Contains(out, "group nogroup may only read") {
			t.Errorf("read-only POST %s: %s", path, out)
		}
	}
	if _, err := g.g.Store.User("u1"); err == nil {
		t.Error("a read-only import reached the store")
	}
	if out := call(65533, 65533, "GET", "/v1/status", ""); !strings.Contains(out, "HTTP 403") ||
		!strings.Contains(out, "or of group nogroup to read only") {
		t.Errorf("caller in neither group: %s", out)
	}
	for path, body := range map[string]string{"/v1/kick": kick, "/v1/import": imp} {
		if out := call(0, 0, "POST", path, body); !strings.Contains(out, "HTTP 200") {
			t.Errorf("root POST %s: %s", path, out)
		}
	}
	if _, err := g.g.Store.User("u1"); err != nil {
		t.Errorf("root's import: %v", err)
	}
	if !strings.Contains(g.logs.String(), "admin request refused") || !strings.Contains(g.logs.String(), "role=read") {
		t.Error("read-only refusal not logged with the caller's role")
	}
}
