package authority_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgeid/edgeid/cloudsync/authority"
)

// screenshotDirs are where a browser test keeps its screenshots:
// $EDGEID_SCREENSHOTS if set, else the test's temporary directory; and
// also $TEST_ARTIFACTS/<test name> if TEST_ARTIFACTS is set (a directory
// CI keeps).
func screenshotDirs(t *testing.T) []string {
	t.Helper()
	dirs := []string{os.Getenv("EDGEID_SCREENSHOTS")}
	if dirs[0] == "" {
		dirs[0] = t.TempDir()
	}
	if a := os.Getenv("TEST_ARTIFACTS"); a != "" {
		dirs = append(dirs, filepath.Join(a, strings.ReplaceAll(t.Name(), "/", "_")))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

// overflowJS lists what sticks out of the viewport (also inside a
// scrolling box, as a button scrolled off screen would) and the page's
// own overflow.
const overflowJS = `(() => {
	const w = document.documentElement.clientWidth, out = [];
	for (const e of document.querySelectorAll('body *')) {
		const r = e.getBoundingClientRect();
		if (r.width > 0 && r.height > 0 && (r.right > w + 0.5 || r.left < -0.5)) {
			out.push(e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : '') + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
		}
	}
	if (document.documentElement.scrollWidth > w) out.push('the page: ' + document.documentElement.scrollWidth + ' px');
	return out;
})()`

// The owner's journey in a real browser, on a phone (390 px) and a desktop
// (1280 px): register, log in, pair a device (its code entered on
// /device, approved), My devices, Unpair (held back by the browser until
// "Yes, unpair" is ticked). At each step nothing is wider than the screen
// and the page breaks no rule of its Content-Security-Policy; each step's
// screenshot is kept (screenshotDirs).
func TestWebJourneyInBrowser(t *testing.T) {
	t.Parallel() // mostly waiting for the browser
	f := newFixture(t)
	f.classes()
	// The fixture's server asks for client certificates, which holds a
	// browser at a certificate prompt: the pages are served here without.
	srv := httptest.NewTLSServer(authority.NewHandler(f.a, adminToken))
	t.Cleanup(srv.Close)
	dirs := screenshotDirs(t)
	ctx := webChromium(t)

	// The console, for CSP violations (and any other error of the page).
	var mu sync.Mutex
	var console []string
	cctx, stopConsole := context.WithCancel(ctx)
	msgs := chromedp.Console(cctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, m.String())
			mu.Unlock()
		}
	}()

	shot := 0
	for _, size := range [][2]int64{{390, 844}, {1280, 800}} {
		width := size[0]
		step := func(name string) {
			t.Helper()
			over, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](overflowJS))
			if err != nil {
				t.Fatal(err)
			}
			if len(over) > 0 {
				t.Errorf("%s at %d px: wider than the screen: %s", name, width, strings.Join(over, "; "))
			}
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			shot++
			for _, d := range dirs {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("%02d-%dpx-%s.png", shot, width, name)), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
			t.Helper()
			if err := chromedp.Do(ctx, steps...); err != nil {
				t.Fatalf("%d px, %s: %v", width, what, err)
			}
		}
		text := func(sel string) string {
			t.Helper()
			s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
			if err != nil {
				t.Fatalf("%d px, text of %s: %v", width, sel, err)
			}
			return s
		}
		user := fmt.Sprintf("owner-%d", width)
		dev := f.keyDevice(fmt.Sprintf("kitchen-speaker-with-a-long-id-%d", width))

		do("register page", chromedp.EmulateViewport(size[0], size[1]), chromedp.Navigate(srv.URL+"/register"), chromedp.WaitVisible(chromedp.CSS("#register")))
		step("register")
		// A wrong field first: its error is beside it, the typed values kept.
		do("register, too short", chromedp.SendKeys(chromedp.CSS("#username"), user), chromedp.SendKeys(chromedp.CSS("#email"), user+"@example.com"),
			chromedp.SendKeys(chromedp.CSS("#password"), "short"), chromedp.Click(chromedp.CSS("#register")), chromedp.WaitVisible(chromedp.CSS("#error-password")))
		step("register-error")
		if v, _ := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#username"))); v != user {
			t.Errorf("%d px: username after an error %q, want %q", width, v, user)
		}
		do("register", chromedp.SendKeys(chromedp.CSS("#password"), webPassword), chromedp.Click(chromedp.CSS("#register")), chromedp.WaitVisible(chromedp.CSS("#notice")))
		step("registered")
		do("log in", chromedp.SendKeys(chromedp.CSS("#password"), webPassword), chromedp.Click(chromedp.CSS("#login")), chromedp.WaitVisible(chromedp.CSS("#none")))
		step("devices-empty")

		// Pair: the device asks for codes; the owner enters the user code.
		_, userCode := dev.start(t)
		do("code page", chromedp.Click(chromedp.CSS("#nav-code")), chromedp.WaitVisible(chromedp.CSS("#user_code")))
		step("code")
		do("enter the code", chromedp.SendKeys(chromedp.CSS("#user_code"), strings.ToLower(userCode)), chromedp.Click(chromedp.CSS("#continue")),
			chromedp.WaitVisible(chromedp.CSS("#approve")))
		step("consent")
		if got := text("#device-id"); got != dev.id {
			t.Fatalf("%d px: consent for %q, want %q", width, got, dev.id)
		}
		do("approve", chromedp.Click(chromedp.CSS("#approve")), chromedp.WaitVisible(chromedp.CSS("#dev-"+dev.id)))
		step("paired")
		if d, _ := f.a.Store.Device(dev.id); d.Owner != user {
			t.Fatalf("%d px: %s owned by %q after approval", width, dev.id, d.Owner)
		}
		do("My devices", chromedp.Click(chromedp.CSS("#nav-devices")), chromedp.WaitVisible(chromedp.CSS("#unpair-"+dev.id)))
		step("devices")

		// Unpair: the browser holds the form back until the box is ticked.
		valid, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#unpair-`+dev.id+`').form.checkValidity()`))
		if err != nil || valid {
			t.Fatalf("%d px: the unpair form is valid without its box (%v)", width, err)
		}
		do("unpair, not confirmed", chromedp.Click(chromedp.CSS("#unpair-"+dev.id)), chromedp.Sleep(200*time.Millisecond), chromedp.WaitVisible(chromedp.CSS("#dev-"+dev.id)))
		step("unpair-held-back") // the browser's bubble asks for the box
		if d, _ := f.a.Store.Device(dev.id); d.Owner != user {
			t.Fatalf("%d px: unpaired without the box ticked", width)
		}
		do("tick", chromedp.Click(chromedp.CSS("#confirm-unpair-"+dev.id)))
		do("unpair", chromedp.Click(chromedp.CSS("#unpair-"+dev.id)), chromedp.WaitNotPresent(chromedp.CSS("#dev-"+dev.id)), chromedp.WaitVisible(chromedp.CSS("#notice")))
		step("unpaired")
		if n := text("#notice"); !strings.Contains(n, "Unpaired "+dev.id) {
			t.Errorf("%d px: notice %q", width, n)
		}
		if d, _ := f.a.Store.Device(dev.id); d.Owner != "" {
			t.Fatalf("%d px: still owned by %q after Unpair", width, d.Owner)
		}
		do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login")))
	}
	stopConsole()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, m := range console {
		if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Content-Security-Policy") {
			t.Errorf("the page breaks its CSP: %s", m)
		}
	}
	t.Logf("screenshots in %s", strings.Join(dirs, ", "))
}
