package broker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/edgeid/edgeid/policy"
)

// discardLog is a logger that writes nowhere.
func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestBroker is a Broker on a mochi server that is not serving, both
// logging nowhere; the server is b.Server.
func newTestBroker(t testing.TB) *Broker {
	t.Helper()
	b, err := New(mqtt.New(&mqtt.Options{Logger: discardLog()}), nil, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// thermoSession is a session of device thermo-1 on cl, valid for an hour,
// with perms; not yet registered with any Sessions.
func thermoSession(cl *mqtt.Client, perms policy.Perms) *Session {
	s := &Session{ClientID: "thermo-1", Device: "thermo-1", cl: cl, Expires: time.Now().Add(time.Hour)}
	s.SetPerms(perms)
	return s
}
