package main

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/edgeid/edgeid/internal/testenv"
)

// TestDemoCommandsWork runs `edgeid serve --demo` on free ports and then the
// very commands it prints: the service's mosquitto_sub receives what the
// CoAP thermostat (PSK) and thermo-2 (certificate over coaps://) publish
// with coap-client.
func TestDemoCommandsWork(t *testing.T) {
	for _, bin := range []string{"mosquitto_sub", "coap-client-openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: .ci/run installs mosquitto-clients and libcoap3-bin", bin)
		}
	}
	t.Setenv("TMPDIR", t.TempDir()) // the demo's throwaway directory
	v := viper.New()
	for k, val := range map[string]string{"mqtt.tcp": "127.0.0.1:0", "mqtt.tls.listen": "127.0.0.1:0",
		"coap.dtls_listen": "127.0.0.1:0", "metrics.listen": ""} {
		v.Set(k, val)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := &testenv.Buf{}
	done := make(chan error, 1)
	go func() { done <- serveDemo(ctx, v, out) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "# technician") {
		if time.Now().After(deadline) {
			t.Fatalf("the demo printed no instructions:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
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
	find := func(prefix string) string {
		for comment, cmd := range printed {
			if strings.HasPrefix(comment, prefix) {
				return cmd
			}
		}
		t.Fatalf("no %q command in:\n%s", prefix, out.String())
		return ""
	}
	sub := exec.Command("bash", "-c", find("# acme-cloud")+" -C 2 -W 20")
	subOut := &testenv.Buf{}
	sub.Stdout, sub.Stderr = subOut, subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let the subscription land
	for _, prefix := range []string{"# thermo-3", "# thermo-2 over CoAP"} {
		cmd := find(prefix)
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
}
