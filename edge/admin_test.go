package edge_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The admin socket authorizes each request by the peer's uid/gid
// (SO_PEERCRED), not only by file permissions: even with the socket opened to
// everyone, a process that is neither root nor in the admin group is refused.
func TestAdminSocketPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not found: install Debian's curl (.ci/run does)")
	}
	g := startGateway(t, func(c *configT) { c.Admin.Group = "no-such-group-edgeid-test" })
	sock := g.cfg.Admin.Socket
	if err := os.Chmod(filepath.Dir(sock), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	get := func(uid uint32) string {
		cmd := exec.Command(curl, "-s", "-w", " HTTP %{http_code}", "--unix-socket", sock, "http://edgeid/v1/status")
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := get(0); !strings.Contains(out, "HTTP 200") || !strings.Contains(out, `"gateway":"test-gw"`) {
		t.Errorf("root: %s", out)
	}
	if out := get(65534); !strings.Contains(out, "HTTP 403") || !strings.Contains(out, "forbidden") {
		t.Errorf("nobody: %s", out)
	}
	if !strings.Contains(g.logs.String(), "admin request refused") || !strings.Contains(g.logs.String(), "uid=65534") {
		t.Error("refusal not logged with the caller's uid")
	}
}
