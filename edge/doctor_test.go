package edge_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	syncclient "github.com/edgeid/edgeid/cloudsync/client"
	"github.com/edgeid/edgeid/edge"
	"github.com/edgeid/edgeid/edge/config"
)

func doctorCfg(t *testing.T) config.Config {
	sockDir, _ := os.MkdirTemp("", "eiddr")
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	c := config.Default()
	c.Gateway.ID = "doc"
	c.StateDir = t.TempDir()
	c.MQTT.TCP, c.MQTT.TLS.Listen, c.Metrics.Listen = "127.0.0.1:0", "", ""
	c.Admin.Socket = filepath.Join(sockDir, "admin.sock")
	return c
}

func find(checks []edge.Check, name string) edge.Check {
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	return edge.Check{Name: name, Result: "missing"}
}

func TestDoctor(t *testing.T) {
	ctx := context.Background()
	t.Run("broken config", func(t *testing.T) {
		checks := edge.Doctor(ctx, config.Config{}, errors.New("config /etc/edgeid/edgeid.yaml: mqtt.tcp: \"nope\" is not host:port"), edge.DoctorOptions{})
		if c := find(checks, "configuration"); c.Result != "fail" || !strings.Contains(c.Detail, "mqtt.tcp") {
			t.Fatalf("configuration check %+v", c)
		}
	})
	t.Run("not running, not enrolled", func(t *testing.T) {
		cfg := doctorCfg(t)
		checks := edge.Doctor(ctx, cfg, nil, edge.DoctorOptions{})
		for name, want := range map[string]string{"configuration": "ok", "daemon": "warn", "store": "ok", "listener mqtt.tcp": "ok", "enrollment": "warn", "disk": "ok"} {
			if c := find(checks, name); c.Result != want {
				t.Errorf("%s: %+v, want %s", name, c, want)
			}
		}
		if c := find(checks, "enrollment"); !strings.Contains(c.Detail, "edgeid enroll") {
			t.Errorf("enrollment check does not say what to do: %+v", c)
		}
	})
	t.Run("running daemon", func(t *testing.T) {
		g := startGateway(t)
		checks := edge.Doctor(ctx, g.cfg, nil, edge.DoctorOptions{})
		if c := find(checks, "daemon"); c.Result != "ok" || !strings.Contains(c.Detail, "running") {
			t.Errorf("daemon: %+v", c)
		}
		if c := find(checks, "store"); c.Result != "ok" || !strings.Contains(c.Detail, "open in the daemon") {
			t.Errorf("store: %+v", c)
		}
	})
	t.Run("clock before the build", func(t *testing.T) {
		checks := edge.Doctor(ctx, doctorCfg(t), nil, edge.DoctorOptions{Now: func() time.Time { return time.Unix(3600, 0) }})
		if c := find(checks, "clock"); c.Result != "fail" || !strings.Contains(c.Detail, "1970") {
			t.Errorf("clock: %+v", c)
		}
	})
	t.Run("clock skewed from the authority", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Date", time.Now().Add(-2*time.Hour).UTC().Format(http.TimeFormat))
			w.Write([]byte(`{}`))
		}))
		defer srv.Close()
		sum := sha256.Sum256(srv.Certificate().Raw)
		cfg := doctorCfg(t)
		e := &syncclient.Enrollment{Authority: srv.URL, Fingerprint: hex.EncodeToString(sum[:]), Gateway: "doc",
			FeedKey: []byte(`{}`), Key: []byte(`{}`), Enrolled: time.Now()}
		if err := e.Save(edge.EnrollmentPath(cfg)); err != nil {
			t.Fatal(err)
		}
		checks := edge.Doctor(ctx, cfg, nil, edge.DoctorOptions{})
		if c := find(checks, "authority"); c.Result != "ok" {
			t.Errorf("authority: %+v", c)
		}
		if c := find(checks, "clock vs authority"); c.Result != "fail" || !strings.Contains(c.Detail, "off by 2h0m") {
			t.Errorf("clock vs authority: %+v", c)
		}
		srv.Close()
		checks = edge.Doctor(ctx, cfg, nil, edge.DoctorOptions{})
		if c := find(checks, "authority"); c.Result != "fail" || !strings.Contains(c.Detail, "unreachable") {
			t.Errorf("authority down: %+v", c)
		}
	})
}
