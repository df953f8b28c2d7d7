// Package packaging holds the Debian packaging (nfpm configs, systemd units,
// maintainer scripts); this test builds the packages with `make deb` and
// checks them the way Debian and systemd will.
package packaging

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: .ci/run installs it (Debian packages lintian, qemu-user-static, systemd, dpkg)", tool)
		}
	}
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDebPackages(t *testing.T) {
	need(t, "make", "dpkg-deb", "lintian", "systemd-analyze", "qemu-aarch64-static", "qemu-arm-static")
	out := run(t, "..", "make", "deb", "DEB_ARCHES=amd64 arm64 armhf", "DEB_VERSION=1.2.3")
	_ = out
	debs := map[string]string{}
	for _, name := range []string{"edgeid_1.2.3_amd64.deb", "edgeid_1.2.3_arm64.deb", "edgeid_1.2.3_armhf.deb",
		"edgeid-authority_1.2.3_amd64.deb", "edgeid-authority_1.2.3_arm64.deb", "edgeid-authority_1.2.3_armhf.deb"} {
		p := filepath.Join("..", "dist", name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("make deb did not build %s", name)
		}
		debs[name] = p
	}

	gw := debs["edgeid_1.2.3_arm64.deb"]
	contents := run(t, ".", "dpkg-deb", "-c", gw)
	for _, want := range []string{"./usr/bin/edgeid", "./usr/lib/systemd/system/edgeid.service", "./usr/lib/sysusers.d/edgeid.conf",
		"./etc/edgeid/edgeid.yaml", "./usr/share/doc/edgeid/copyright", "./usr/share/doc/edgeid/changelog.gz"} {
		if !strings.Contains(contents, want+"\n") {
			t.Errorf("package lacks %s:\n%s", want, contents)
		}
	}
	for field, want := range map[string]string{"Package": "edgeid", "Version": "1.2.3", "Architecture": "arm64", "Section": "net", "Depends": "adduser, tzdata"} {
		if got := strings.TrimSpace(run(t, ".", "dpkg-deb", "-f", gw, field)); got != want {
			t.Errorf("control %s = %q, want %q", field, got, want)
		}
	}
	tmp := t.TempDir()
	run(t, ".", "dpkg-deb", "-e", gw, filepath.Join(tmp, "control"))
	conffiles, _ := os.ReadFile(filepath.Join(tmp, "control", "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/edgeid/edgeid.yaml" {
		t.Errorf("conffiles = %q, want /etc/edgeid/edgeid.yaml (upgrades keep local edits)", conffiles)
	}
	postrm, _ := os.ReadFile(filepath.Join(tmp, "control", "postrm"))
	if !strings.Contains(string(postrm), "purge)") || !strings.Contains(string(postrm), "rm -rf /var/lib/edgeid") {
		t.Error("postrm must remove state on purge only")
	}

	for name, p := range debs {
		cmd := exec.Command("lintian", "--tag-display-limit", "0", p)
		lo, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(string(lo), "\n") {
			if strings.HasPrefix(line, "E: ") {
				t.Errorf("lintian error in %s: %s", name, line)
			}
		}
	}

	// systemd accepts the unit (with ExecStart pointing at the packaged binary).
	root := filepath.Join(tmp, "root-amd64")
	run(t, ".", "dpkg-deb", "-x", debs["edgeid_1.2.3_amd64.deb"], root)
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/edgeid.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=edgeid", "RuntimeDirectory=edgeid"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	local := strings.ReplaceAll(string(unit), "ExecStart=/usr/bin/edgeid", "ExecStart="+filepath.Join(root, "usr/bin/edgeid"))
	unitPath := filepath.Join(tmp, "edgeid.service")
	_ = os.WriteFile(unitPath, []byte(local), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", unitPath).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	checkAuthorityPackage(t, debs, tmp)

	// The arm64 and armhf binaries run under qemu: version, then serve until READY.
	for _, a := range []struct{ arch, qemu string }{{"arm64", "qemu-aarch64-static"}, {"armhf", "qemu-arm-static"}} {
		root := filepath.Join(tmp, "root-"+a.arch)
		run(t, ".", "dpkg-deb", "-x", debs["edgeid_1.2.3_"+a.arch+".deb"], root)
		if f := run(t, ".", "dpkg-deb", "-f", debs["edgeid_1.2.3_"+a.arch+".deb"], "Architecture"); strings.TrimSpace(f) != a.arch {
			t.Errorf("%s package Architecture %q", a.arch, f)
		}
		bin := filepath.Join(root, "usr/bin/edgeid")
		if v := run(t, ".", a.qemu, bin, "version"); !strings.Contains(v, "edgeid 1.2.3") {
			t.Errorf("%s version: %q", a.arch, v)
		}
		serveUnderQemu(t, a.qemu, bin)
		// The appliance's binary carries no embedded demo authority (nodemo).
		out, err := exec.Command(a.qemu, bin, "serve", "--demo").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "built without the embedded demo") {
			t.Errorf("%s serve --demo: %v\n%s", a.arch, err, out)
		}
	}
}

func serveUnderQemu(t *testing.T, qemu, bin string) {
	dir := t.TempDir()
	sockDir, _ := os.MkdirTemp("", "eidq")
	defer os.RemoveAll(sockDir)
	notify := filepath.Join(sockDir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	cfg := filepath.Join(dir, "edgeid.yaml")
	_ = os.WriteFile(cfg, []byte("gateway:\n  id: qemu-gw\nstate_dir: "+filepath.Join(dir, "state")+
		"\nmqtt:\n  tcp: 127.0.0.1:0\n  tls:\n    listen: \"\"\nadmin:\n  socket: "+filepath.Join(sockDir, "admin.sock")+"\nmetrics:\n  listen: \"\"\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, bin, "serve", "-c", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = sock.SetReadDeadline(time.Now().Add(90 * time.Second))
	n, err := sock.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "READY=1") {
		_ = cmd.Process.Kill()
		t.Fatalf("%s serve under %s did not reach READY (%v, %q)\n%s", bin, qemu, err, buf[:n], logs.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("%s serve did not stop cleanly on SIGTERM: %v\n%s", qemu, err, logs.String())
	}
}

// checkAuthorityPackage checks the authority's package: its configuration
// is a conffile, systemd accepts its unit, and the packaged binary takes
// the packaged configuration (check-config, then serve until READY).
func checkAuthorityPackage(t *testing.T, debs map[string]string, tmp string) {
	deb := debs["edgeid-authority_1.2.3_amd64.deb"]
	contents := run(t, ".", "dpkg-deb", "-c", deb)
	for _, want := range []string{"./usr/bin/edgeid-authority", "./usr/lib/systemd/system/edgeid-authority.service",
		"./etc/edgeid-authority/authority.yaml", "./etc/default/edgeid-authority"} {
		if !strings.Contains(contents, want+"\n") {
			t.Errorf("authority package lacks %s:\n%s", want, contents)
		}
	}
	ctl := filepath.Join(tmp, "control-authority")
	run(t, ".", "dpkg-deb", "-e", deb, ctl)
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	for _, want := range []string{"/etc/edgeid-authority/authority.yaml", "/etc/default/edgeid-authority"} {
		if !strings.Contains(string(conffiles)+"\n", want+"\n") {
			t.Errorf("authority conffiles = %q, want %s among them (upgrades keep local edits)", conffiles, want)
		}
	}
	root := filepath.Join(tmp, "root-authority-amd64")
	run(t, ".", "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/bin/edgeid-authority")
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/edgeid-authority.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "--config /etc/edgeid-authority/authority.yaml", "EnvironmentFile=-/etc/default/edgeid-authority",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=edgeid-authority"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("authority unit lacks %s", want)
		}
	}
	local := strings.ReplaceAll(string(unit), "ExecStart=/usr/bin/edgeid-authority", "ExecStart="+bin)
	unitPath := filepath.Join(tmp, "edgeid-authority.service")
	_ = os.WriteFile(unitPath, []byte(local), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", unitPath).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify edgeid-authority.service: %v\n%s", err, out)
	}

	// The packaged configuration is valid as shipped (the token comes from
	// the postinst; here from the environment).
	conf := filepath.Join(root, "etc/edgeid-authority/authority.yaml")
	env := append(os.Environ(), "EDGEID_AUTHORITY_ADMIN_TOKEN=packaging-test-admin-token")
	cmd := exec.Command(bin, "check-config", "--config", conf)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "valid") {
		t.Errorf("check-config of the packaged %s: %v\n%s", conf, err, out)
	}

	// serve with it, as the unit starts it (flags as in EDGEID_AUTHORITY_ARGS), until READY, then SIGTERM.
	sockDir, _ := os.MkdirTemp("", "eida")
	defer os.RemoveAll(sockDir)
	notify := filepath.Join(sockDir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd = exec.CommandContext(ctx, bin, "serve", "--config", conf, "--state-dir", filepath.Join(tmp, "authority-state"),
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	cmd.Env = append(env, "NOTIFY_SOCKET="+notify)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		_ = sock.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	select {
	case err := <-exited:
		t.Fatalf("edgeid-authority serve with the packaged configuration exited before READY (%v)\n%s", err, logs.String())
	case msg := <-got:
		if !strings.HasPrefix(msg, "READY=1") {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("edgeid-authority serve with the packaged configuration did not reach READY (%q)\n%s", msg, logs.String())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		t.Errorf("edgeid-authority serve did not stop cleanly on SIGTERM: %v\n%s", err, logs.String())
	}
}
