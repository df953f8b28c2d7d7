package edge_test

import (
	"strings"
	"testing"
)

// A sleepy device with stock mosquitto clients (MQTT 3.1.1, clean session
// off, -c): what is sent while it sleeps and its permission allows arrives
// when it wakes; another device's command does not.
func TestMosquittoSleepyDevice(t *testing.T) {
	g := startGateway(t)
	host, port := g.hostPort("tcp")
	devTok := g.token("thermo-1", "thermo-1", nil)
	svcTok := g.token("acme-cloud", "acme-cloud", nil)
	sub := []string{"-h", host, "-p", port, "-V", "mqttv311", "-c", "-q", "1", "-u", "thermo-1", "-P", devTok}

	// Subscribe, then sleep (mosquitto_sub exits after 1 s, keeping its session).
	wait := g.startSub(t, "thermo-1", "devices/thermo-1/commands/#", append(sub, "-W", "1")...)
	_, _ = wait()
	waitFor(t, "offline session", func() bool { return g.g.Broker.Sessions.Offline() == 1 })

	for _, m := range []struct{ topic, msg string }{
		{"devices/thermo-1/commands/set", "20.5"},
		{"devices/thermo-9/commands/set", "not-yours"},
		{"devices/thermo-1/commands/mode", "eco"},
	} {
		if out, err := run(t, "mosquitto_pub", "-h", host, "-p", port, "-V", "5", "-i", "acme-cloud", "-u", "acme-cloud", "-P", svcTok,
			"-t", m.topic, "-m", m.msg, "-q", "1"); err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
	}
	waitFor(t, "2 queued", func() bool { return g.g.Broker.OfflineQueued() == 2 })

	out, err := run(t, "mosquitto_sub", append(sub, "-i", "thermo-1", "-t", "devices/thermo-1/commands/#", "-C", "2", "-W", "15", "-v")...)
	if err != nil {
		t.Fatalf("mosquitto_sub on wake: %v\n%s", err, out)
	}
	want := "devices/thermo-1/commands/set 20.5\ndevices/thermo-1/commands/mode eco\n"
	if out != want {
		t.Fatalf("on wake mosquitto_sub printed %q, want %q", out, want)
	}
	if strings.Contains(out, "not-yours") {
		t.Fatal("received another device's command")
	}
}
