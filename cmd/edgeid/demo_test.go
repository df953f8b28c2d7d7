//go:build !nodemo

package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/internal/testenv"
)

// TestDemoCommandsWork runs `edgeid serve --demo` (what `make run` runs:
// an authority, the gateway enrolled to it, the demo devices synced from
// it) on free ports and then the very commands it prints: the service's
// mosquitto_sub receives what the CoAP thermostat (PSK) and thermo-2
// (certificate over coaps://) publish with coap-client; the printed
// `edgeid-sensor pair` line pairs thermo-4 once the printed owner login
// approves its code on the authority's pages, and the owner's Unpair there
// cuts its session at the gateway; the printed admin revoke cuts thermo-1.
func TestDemoCommandsWork(t *testing.T) {
	for _, bin := range []string{"mosquitto_sub", "mosquitto_pub", "coap-client-openssl", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: .ci/run installs mosquitto-clients, libcoap3-bin and curl", bin)
		}
	}
	sensorBin := filepath.Join(t.TempDir(), "edgeid-sensor")
	if out, err := exec.Command("go", "build", "-o", sensorBin, "../edgeid-sensor").CombinedOutput(); err != nil {
		t.Fatalf("build edgeid-sensor: %v\n%s", err, out)
	}
	t.Setenv("TMPDIR", t.TempDir()) // the demo's throwaway directory
	v := viper.New()
	for k, val := range map[string]string{"mqtt.tcp": "127.0.0.1:0", "mqtt.tls.listen": "127.0.0.1:0",
		"coap.dtls_listen": "127.0.0.1:0", "http.listen": "127.0.0.1:0", "metrics.listen": ""} {
		v.Set(k, val)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &testenv.Buf{}
	done := make(chan error, 1)
	started := make(chan *demoSystem, 1)
	go func() {
		done <- serveDemo(ctx, v, out, demoOptions{AuthorityListen: "127.0.0.1:0", Started: func(s *demoSystem) { started <- s }})
	}()
	t.Cleanup(func() { cancel(); <-done })
	var sys *demoSystem
	select {
	case sys = <-started:
	case err := <-done:
		t.Fatalf("the demo ended: %v\n%s", err, out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the demo printed no instructions:\n%s", out.String())
	}
	printed := map[string]string{} // first command after each comment
	var last string
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# "):
			last = line
		case line != "" && last != "" && printed[last] == "":
			printed[last] = line
		}
	}
	find := func(prefix string) (comment, cmd string) {
		t.Helper()
		for comment, cmd := range printed {
			if strings.HasPrefix(comment, prefix) {
				return comment, cmd
			}
		}
		t.Fatalf("no %q command in:\n%s", prefix, out.String())
		return "", ""
	}
	command := func(prefix string) string { _, cmd := find(prefix); return cmd }

	// The service receives what the CoAP devices publish.
	sub := exec.Command("bash", "-c", command("# acme-cloud")+" -C 2 -W 20")
	subOut := &testenv.Buf{}
	sub.Stdout, sub.Stderr = subOut, subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the subscription land
	for _, prefix := range []string{"# thermo-3", "# thermo-2 over CoAP"} {
		cmd := command(prefix)
		if res, _ := exec.Command("bash", "-c", "timeout 20 "+cmd).CombinedOutput(); strings.Contains(string(res), "4.") {
			t.Fatalf("%s: %s", cmd, res)
		}
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", err, subOut.String())
	}
	for _, want := range []string{"devices/thermo-3/telemetry/temp 20.5", "devices/thermo-2/telemetry/temp 19.5"} {
		if !strings.Contains(subOut.String(), want) {
			t.Errorf("the service did not get %q; it got:\n%s", want, subOut.String())
		}
	}

	// Pin & pair with the printed sensor line and the printed owner login.
	pairLine := command("# thermo-4 (pin & pair")
	const goRun = "go run ./cmd/edgeid-sensor "
	if !strings.HasPrefix(pairLine, goRun) {
		t.Fatalf("the pair line does not start with %q: %s", goRun, pairLine)
	}
	sctx, stopSensor := context.WithCancel(context.Background())
	sensor := exec.CommandContext(sctx, "bash", "-c", "exec "+sensorBin+" "+strings.TrimPrefix(pairLine, goRun))
	sensorOut := &testenv.Buf{}
	sensor.Stdout, sensor.Stderr = sensorOut, sensorOut
	if err := sensor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSensor(); _ = sensor.Wait() })
	var userCode string
	codeRE := regexp.MustCompile(`enter the code\s+([A-Z]{4}-[A-Z]{4})`)
	waitFor(t, "the code on the sensor's display", func() bool {
		if m := codeRE.FindStringSubmatch(sensorOut.String()); m != nil {
			userCode = m[1]
		}
		return userCode != ""
	}, sensorOut)
	if !strings.Contains(sensorOut.String(), "called home: CONNACK 0x00") {
		t.Errorf("the sensor did not call home through the gateway:\n%s", sensorOut.String())
	}

	loginComment, loginURL := find("# owner pages")
	m := regexp.MustCompile(`log in as (\S+) with password (\S+)`).FindStringSubmatch(loginComment)
	if m == nil {
		t.Fatalf("no login in %q", loginComment)
	}
	fp := regexp.MustCompile(`--fingerprint (\S+)`).FindStringSubmatch(pairLine)
	if fp == nil {
		t.Fatalf("no fingerprint in %q", pairLine)
	}
	base := strings.TrimSuffix(loginURL, "/login")
	b := newOwnerBrowser(t, base, fp[1])
	_, csrf := b.get("/login")
	if code, body := b.post("/login", url.Values{"csrf": {csrf}, "username": {m[1]}, "password": {m[2]}}); code != 200 || !strings.Contains(body, `id="dev-thermo-1"`) {
		t.Fatalf("log in with the printed login: %d\n%s", code, body)
	}
	_, csrf = b.get("/device")
	code, body := b.post("/device", url.Values{"csrf": {csrf}, "user_code": {userCode}})
	if code != 200 || !strings.Contains(body, `id="approve"`) {
		t.Fatalf("enter the code: %d\n%s", code, body)
	}
	csrf = csrfOf(body)
	if code, body := b.post("/device/consent", url.Values{"csrf": {csrf}, "user_code": {userCode}, "decision": {"approve"}}); code != 200 || !strings.Contains(body, `id="dev-thermo-4"`) {
		t.Fatalf("approve: %d\n%s", code, body)
	}
	g := sys.Gateway
	waitFor(t, "the paired sensor's session at the gateway", func() bool {
		return strings.Contains(sensorOut.String(), "PUBACK 1 0x00") && len(g.Broker.Sessions.ByDevice("thermo-4")) == 1
	}, sensorOut)

	// The owner unpairs it: the gateway cuts it off.
	_, csrf = b.get("/devices")
	if code, body := b.post("/devices/thermo-4/unpair", url.Values{"csrf": {csrf}, "confirm": {"yes"}}); code != 200 || strings.Contains(body, `id="dev-thermo-4"`) {
		t.Fatalf("unpair: %d\n%s", code, body)
	}
	waitFor(t, "the gateway to cut the unpaired sensor off", func() bool { return len(g.Broker.Sessions.ByDevice("thermo-4")) == 0 }, sensorOut)

	// thermo-1 publishes; the printed admin revoke cuts it.
	t1 := command("# thermo-1 (token as password")
	if res, err := exec.Command("bash", "-c", "timeout 20 "+t1).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", t1, err, res)
	}
	revoke := command("# admin API: revoke thermo-1")
	if res, err := exec.Command("bash", "-c", "timeout 20 "+revoke).CombinedOutput(); err != nil || !strings.Contains(string(res), `"rev"`) {
		t.Fatalf("%s: %v %s", revoke, err, res)
	}
	waitFor(t, "thermo-1 refused after the admin revoke", func() bool {
		return exec.Command("bash", "-c", "timeout 20 "+t1).Run() != nil
	}, nil)
}

// ownerBrowser is an owner's browser on the authority's pages: cookies,
// the authority's self-signed certificate pinned.
type ownerBrowser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newOwnerBrowser(t *testing.T, base, fingerprint string) *ownerBrowser {
	jar, _ := cookiejar.New(nil)
	c := syncclient.HTTPClient(fingerprint)
	c.Jar = jar
	return &ownerBrowser{t: t, base: base, c: c}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(body string) string {
	if m := csrfRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// get returns the status and the page's CSRF token.
func (b *ownerBrowser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, csrfOf(string(body))
}

func (b *ownerBrowser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitFor polls cond for up to 60 s; on failure it shows log.
func waitFor(t *testing.T, what string, cond func() bool, log *testenv.Buf) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if log != nil {
				t.Fatalf("timed out waiting for %s; sensor:\n%s", what, log.String())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
