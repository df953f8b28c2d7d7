package edge_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/store"
)

// newBrowser starts headless Debian chromium for a test.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: install Debian's chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelAlloc() })
	return ctx
}

// The owner types the code that edgeid-sensor (the speaker) prints.
func TestPinAndPairWithSensor(t *testing.T) {
	t.Parallel() // mostly waiting: overlaps the other slow tests (make test stays under 10 minutes)
	bin := filepath.Join(t.TempDir(), "edgeid-sensor")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/edgeid-sensor").CombinedOutput(); err != nil {
		t.Fatalf("build edgeid-sensor: %v\n%s", err, out)
	}
	x := startAuthority(t)
	speaker, _ := demo.NewIssuer("speaker-7", "speaker-7-key")
	pub, _ := speaker.Key.PublicKey()
	pubJSON, _ := json.Marshal(pub)
	privJSON, _ := json.Marshal(speaker.Key)
	keyFile := filepath.Join(t.TempDir(), "device.jwk")
	if err := os.WriteFile(keyFile, privJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	x.admin("POST", "/admin/v1/import", store.Batch{Classes: demo.Classes(),
		Devices: []store.Device{{ID: "speaker-7", Serial: "SPK-7", Class: "thermostat", Status: store.DeviceActive, PublicKey: pubJSON}}})
	g := startGateway(t, func(c *configT) { c.Sync.Enrollment = x.enroll("gw-living") })
	waitFor(t, "the speaker at the gateway", func() bool { _, err := g.g.Store.Device("speaker-7"); return err == nil })

	out := &syncBuf{}
	ctxS, stopSensor := context.WithCancel(context.Background())
	defer stopSensor()
	sensor := exec.CommandContext(ctxS, bin, "pair", "--authority", x.srv.URL, "--fingerprint", x.fp, "--device", "speaker-7",
		"--key", keyFile, "--broker", g.g.Addr("tcp"), "--count", "1", "--listen", "60s", "--timeout", "90s")
	sensor.Stdout, sensor.Stderr = out, out
	if err := sensor.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopSensor(); _ = sensor.Wait() }()
	var code string
	codeRE := regexp.MustCompile(`enter the code\s+([A-Z]{4}-[A-Z]{4})`)
	// A liveness bound, generous: make test runs this beside two browser
	// tests under the race detector.
	for deadline := time.Now().Add(90 * time.Second); code == ""; time.Sleep(20 * time.Millisecond) {
		if m := codeRE.FindStringSubmatch(out.String()); m != nil {
			code = m[1]
		}
		if time.Now().After(deadline) {
			var gwlog []string
			for _, l := range strings.Split(g.logs.String(), "\n") {
				if strings.Contains(l, "speaker-7") && (strings.Contains(l, "WARN") || strings.Contains(l, "refused")) {
					gwlog = append(gwlog, l)
				}
			}
			t.Fatalf("no code on the speaker's display after 90 s; the sensor printed:\n%s\nthe gateway logged:\n%s", out.String(), strings.Join(gwlog, "\n"))
		}
	}

	ctx := newBrowser(t)
	err := chromedp.Do(ctx,
		chromedp.Navigate(x.srv.URL+"/register"),
		chromedp.SendKeys("#username", "carol"),
		chromedp.SendKeys("#email", "carol@example.com"),
		chromedp.SendKeys("#password", "another good password"),
		chromedp.Click("#register"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys("#password", "another good password"),
		chromedp.Click("#login"),
		chromedp.WaitVisible("#none"),
		chromedp.Navigate(x.srv.URL+"/device"),
		chromedp.SendKeys("#user_code", strings.ToLower(code)), // as a person might type it
		chromedp.Click("#continue"),
		chromedp.WaitVisible("#approve"),
		chromedp.Click("#approve"),
		chromedp.WaitVisible("#dev-speaker-7"),
	)
	if err != nil {
		t.Fatalf("browser: %v\nsensor:\n%s", err, out.String())
	}
	// The call-home connect printed a CONNACK already: wait for the paired
	// session's first acknowledged publish.
	waitFor(t, "the speaker connected with its paired token", func() bool {
		return strings.Contains(out.String(), "PUBACK 1 0x00") && len(g.g.Broker.Sessions.ByDevice("speaker-7")) == 1
	})
	if err := chromedp.Do(ctx, chromedp.Click("#confirm-unpair-speaker-7"), chromedp.Click("#unpair-speaker-7"), chromedp.WaitNotPresent("#dev-speaker-7")); err != nil {
		t.Fatalf("unpair: %v", err)
	}
	waitFor(t, "the gateway to cut the speaker off", func() bool { return len(g.g.Broker.Sessions.ByDevice("speaker-7")) == 0 })
}
