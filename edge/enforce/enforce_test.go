package enforce_test

import (
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/authn"
	"github.com/edgeid/edgeid/edge/enforce"
	"github.com/edgeid/edgeid/store"
)

// fake is a front end holding named principals; it records what it was told.
type fake struct {
	ps      map[string]enforce.Principal
	ended   []string
	checked []string
}

func (f *fake) pick(sel enforce.Selector) []string {
	var out []string
	for name, p := range f.ps {
		switch {
		case sel.Device != "" && p.Device != sel.Device:
		case sel.Subject != "" && (p.Claims == nil || p.Claims.Subject != sel.Subject):
		case sel.JTI != "" && (p.Claims == nil || p.Claims.JTI != sel.JTI):
		default:
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (f *fake) End(sel enforce.Selector, m enforce.Match, reason string) int {
	n := 0
	for _, name := range f.pick(sel) {
		if m == nil || m(f.ps[name]) {
			f.ended = append(f.ended, name)
			delete(f.ps, name)
			n++
		}
	}
	return n
}

func (f *fake) Recheck(sel enforce.Selector, m enforce.Match) {
	for _, name := range f.pick(sel) {
		if m == nil || m(f.ps[name]) {
			f.checked = append(f.checked, name)
		}
	}
}

func fronts(t0 time.Time) (*fake, *fake) {
	tok := func(dev, sub, jti string, iat time.Time) *authn.Claims {
		return &authn.Claims{ClientID: dev, Subject: sub, JTI: jti, IssuedAt: iat}
	}
	mqtt := &fake{ps: map[string]enforce.Principal{
		"m-dev1-token-old": {Device: "dev1", Claims: tok("dev1", "alice", "j1", t0.Add(-time.Hour)), Since: t0.Add(-time.Hour)},
		"m-dev1-token-new": {Device: "dev1", Claims: tok("dev1", "bob", "j2", t0.Add(time.Minute)), Since: t0.Add(time.Minute)},
		"m-dev1-cert-old":  {Device: "dev1", Since: t0.Add(-time.Minute)},
		"m-dev1-cert-new":  {Device: "dev1", Since: t0.Add(time.Minute)},
		"m-dev2-token":     {Device: "dev2", Claims: tok("dev2", "alice", "j3", t0.Add(-time.Hour)), Since: t0.Add(-time.Hour)},
	}}
	coap := &fake{ps: map[string]enforce.Principal{
		"c-dev1-psk-old":   {Device: "dev1", Since: t0.Add(-time.Minute)},
		"c-dev3-authzinfo": {Device: "dev3", Claims: tok("dev3", "alice", "j4", t0.Add(-time.Hour)), Since: t0.Add(-time.Hour)},
	}}
	return mqtt, coap
}

// A revocation ends exactly the principals it covers, on every front end,
// and nothing else; a device revocation reaches certificate and PSK
// principals proven before it, and not those proven after.
func TestRevocationsEndExactlyWhatTheyCover(t *testing.T) {
	t0 := time.Now()
	for _, tc := range []struct {
		name string
		r    store.Revocation
		want string
	}{
		{"device", store.Revocation{Kind: store.RevokeDevice, Value: "dev1", RevokedAt: t0}, "c-dev1-psk-old,m-dev1-cert-old,m-dev1-token-old"},
		{"subject", store.Revocation{Kind: store.RevokeSubject, Value: "alice", RevokedAt: t0}, "c-dev3-authzinfo,m-dev1-token-old,m-dev2-token"},
		{"token", store.Revocation{Kind: store.RevokeToken, Value: "j2"}, "m-dev1-token-new"},
		{"old device revocation replayed", store.Revocation{Kind: store.RevokeDevice, Value: "dev1", RevokedAt: t0.Add(-2 * time.Hour)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mqtt, coap := fronts(t0)
			e := enforce.New(slog.New(slog.NewTextHandler(io.Discard, nil)), mqtt, coap)
			n := e.Applied(store.Applied{Batch: &store.Batch{Revocations: []store.Revocation{tc.r}}})
			got := append(append([]string{}, mqtt.ended...), coap.ended...)
			sort.Strings(got)
			if strings.Join(got, ",") != tc.want || n != len(got) {
				t.Fatalf("ended %v (%d), want %s", got, n, tc.want)
			}
			if len(mqtt.checked)+len(coap.checked) != 0 {
				t.Fatalf("a revocation re-checked %v %v", mqtt.checked, coap.checked)
			}
		})
	}
}

// Record changes re-check exactly the principals they name.
func TestChangesRecheckWhatTheyName(t *testing.T) {
	t0 := time.Now()
	for _, tc := range []struct {
		name string
		a    store.Applied
		want string
	}{
		{"device", store.Applied{Batch: &store.Batch{Devices: []store.Device{{ID: "dev2"}}}}, "m-dev2-token"},
		{"deleted device", store.Applied{Batch: &store.Batch{Delete: store.Deletions{Devices: []string{"dev3"}}}}, "c-dev3-authzinfo"},
		{"user", store.Applied{Batch: &store.Batch{Users: []store.User{{ID: "bob"}}}}, "m-dev1-token-new"},
		{"issuer", store.Applied{Batch: &store.Batch{Issuers: []store.Issuer{{Issuer: "https://i"}}}}, "c-dev3-authzinfo,m-dev1-token-new,m-dev1-token-old,m-dev2-token"},
		{"class", store.Applied{Batch: &store.Batch{Classes: []store.DeviceClass{{Name: "c"}}}}, "c-dev1-psk-old,c-dev3-authzinfo,m-dev1-cert-new,m-dev1-cert-old,m-dev1-token-new,m-dev1-token-old,m-dev2-token"},
		{"replaced", store.Applied{Batch: &store.Batch{}, Replaced: true}, "c-dev1-psk-old,c-dev3-authzinfo,m-dev1-cert-new,m-dev1-cert-old,m-dev1-token-new,m-dev1-token-old,m-dev2-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mqtt, coap := fronts(t0)
			enforce.New(slog.New(slog.NewTextHandler(io.Discard, nil)), mqtt, coap).Applied(tc.a)
			got := append(append([]string{}, mqtt.checked...), coap.checked...)
			sort.Strings(got)
			if strings.Join(got, ",") != tc.want {
				t.Fatalf("re-checked %v, want %s", got, tc.want)
			}
		})
	}
}

// A kick names something; the gateway refuses a kick of everything, and
// Kick reaches every front end.
func TestKickReachesEveryFrontEnd(t *testing.T) {
	mqtt, coap := fronts(time.Now())
	e := enforce.New(slog.New(slog.NewTextHandler(io.Discard, nil)), mqtt, coap)
	if n := e.Kick(enforce.Selector{Device: "dev1"}, "kicked"); n != 5 {
		t.Fatalf("kicked %d, want 5 (4 MQTT, 1 CoAP)", n)
	}
}
