package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Issue 15: `edgeid-authority admin-key add NAME` prints a new named key
// once, `list` shows names, when and last use (never a key), `revoke NAME`
// ends it; each goes through the admin API of the running authority.
func TestAdminKeyCommand(t *testing.T) {
	s := startServe(t)
	cli := func(tokFile string, args ...string) (string, error) {
		t.Helper()
		var out strings.Builder
		base := []string{"--url", s.URL, "--fingerprint", s.Fingerprint}
		if tokFile != "" {
			base = append(base, "--admin-token-file", tokFile)
		}
		err := adminKeyCmd(context.Background(), append(args, base...), &out)
		return out.String(), err
	}
	// startServe set EDGEID_AUTHORITY_ADMIN_TOKEN: the bootstrap key.
	out, err := cli("", "add", "ops-alice")
	key := regexp.MustCompile(`edgeid_ak_[A-Za-z0-9_-]{43}`).FindString(out)
	if err != nil || key == "" {
		t.Fatalf("admin-key add: %v\n%s", err, out)
	}
	// The new key, from a file, acts as ops-alice.
	t.Setenv("EDGEID_AUTHORITY_ADMIN_TOKEN", "")
	file := filepath.Join(t.TempDir(), "ops-alice.key")
	if err := os.WriteFile(file, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(file, "add", "ci"); err != nil || !strings.Contains(out, "admin key ci") {
		t.Fatalf("add with ops-alice's key: %v\n%s", err, out)
	}
	out, err = cli(file, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !regexp.MustCompile(`^bootstrap +\(configuration\) +- +\d{4}-`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^ci +\d{4}-\d\d-\d\d \S+ +admin:ops-alice +never$`).MatchString(lines[2]) ||
		!regexp.MustCompile(`^ops-alice +\d{4}-\d\d-\d\d \S+ +admin:bootstrap +\d{4}-`).MatchString(lines[3]) || strings.Contains(out, "edgeid_ak_") {
		t.Fatalf("admin-key list:\n%s", out)
	}
	if out, err := cli(file, "add", "ci"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("add ci twice: %v %s", err, out)
	}
	if out, err := cli(file, "revoke", "ops-alice"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	if _, err := cli(file, "list"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a revoked key still lists: %v", err)
	}
	if _, err := cli(file, "rotate"); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("unknown subcommand: %v", err)
	}
}
