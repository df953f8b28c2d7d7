package edge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeid/edgeid/edge/admin"
	"github.com/edgeid/edgeid/edge/config"
)

// A technician sees CoAP sessions beside MQTT ones (edgeid sessions, devices,
// status) and kicks them the same way: by device, subject or token id.
func TestCoAPSessionsForTechnician(t *testing.T) {
	g, d := startUDPGateway(t, func(c *config.Config) { c.CoAP.DTLSListen, c.Metrics.Listen = "127.0.0.1:0", "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g.addPSKDevice(coapDevice, coapID, coapKey)
	ac := g.admin()
	find := func(device, transport string) *admin.Session {
		ss, err := ac.Sessions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if s.Device == device && s.Transport == transport {
				return &s
			}
		}
		return nil
	}

	// coap-1 observes over DTLS-PSK; udp-1 observes over plain UDP with a token.
	psk := g.observe(t, "devices/coap-1/commands/set", "10")
	d.authorize(t)
	d.observe(t, d.token, "10")

	s := find("coap-1", "coaps")
	if s == nil || s.Method != "psk" || s.Observations != 1 || s.Remote == "" {
		t.Fatalf("coap-1's DTLS session as listed: %+v", s)
	}
	u := find("udp-1", "coap")
	if u == nil || u.Method != "token" || u.Subject != "alice" || u.Expires.IsZero() || u.Observations != 1 {
		t.Fatalf("udp-1's plain-UDP session as listed: %+v", u)
	}
	st, err := ac.Status(ctx)
	if err != nil || st.Sessions < 2 {
		t.Fatalf("status counts %d sessions (%v), want the 2 CoAP ones", st.Sessions, err)
	}
	var ds []admin.Device
	if err := ac.Do(ctx, "GET", "/v1/devices?online=1", nil, &ds); err != nil {
		t.Fatal(err)
	}
	online := map[string]int{}
	for _, dv := range ds {
		online[dv.ID] = dv.Sessions
		if len(dv.PSK) > 0 {
			t.Errorf("device %s: the PSK went over the admin socket", dv.ID)
		}
	}
	if online["coap-1"] != 1 || online["udp-1"] != 1 {
		t.Fatalf("online devices %v, want coap-1 and udp-1 with 1 session each", online)
	}

	// And the metrics: sessions by transport, observations, refusals.
	d.request(t, "put", udpTemp, "x", "", "") // no proof: 4.01
	body := scrape(t, g)
	for name, want := range map[string]float64{`edgeid_coap_sessions{transport="coaps"}`: 1, `edgeid_coap_sessions{transport="coap"}`: 1,
		`edgeid_coap_observations`: 2} {
		if got := metric(body, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metric(body, `edgeid_coap_unauthorized_total`); got < 1 {
		t.Errorf("edgeid_coap_unauthorized_total = %v, want the refused request counted", got)
	}

	// Kick by device ends the DTLS session and its observation.
	if r, err := ac.Kick(ctx, admin.KickRequest{Device: "coap-1"}); err != nil || r.Kicked != 1 {
		t.Fatalf("kick coap-1: %+v %v", r, err)
	}
	<-psk.done // coap-client ends with its session
	if find("coap-1", "coaps") != nil {
		t.Fatal("coap-1 still listed after the kick")
	}
	// Kick by the token's subject ends the plain-UDP session bound to it.
	if r, err := ac.Kick(ctx, admin.KickRequest{Subject: "alice"}); err != nil || r.Kicked != 1 {
		t.Fatalf("kick subject alice: %+v %v", r, err)
	}
	if n := g.g.CoAP.Observations("udp-1"); n != 0 || find("udp-1", "coap") != nil {
		t.Fatalf("udp-1 still has %d observations after the kick", n)
	}
	if !strings.Contains(g.logs.String(), "kicked by technician") {
		t.Error("no kick logged")
	}
}
