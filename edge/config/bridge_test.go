package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

func TestBridgeConfigLoadsWithDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgeid.yaml")
	yaml := `gateway: {id: gw-9}
bridge:
  remotes:
    - name: cloud
      address: mqtts://cloud.example:8883
      rules:
        - {filter: "devices/+/telemetry/#", direction: out, qos: 1}
        - {filter: "devices/+/commands/#", direction: in, qos: 1, remote_prefix: "site/{gateway}/down/"}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(viper.New(), path)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Bridge.Remotes[0]
	if r.Protocol != "5" || r.ClientID != "gw-9" || r.Class != "bridge" || r.KeepAlive.Seconds() != 60 {
		t.Errorf("remote defaults: %+v", r)
	}
	if r.Rules[0].RemotePrefix != "gateways/gw-9/" || r.Rules[1].RemotePrefix != "site/gw-9/down/" {
		t.Errorf("prefixes: %q, %q", r.Rules[0].RemotePrefix, r.Rules[1].RemotePrefix)
	}
	if c.Bridge.Queue.Sync != "batch" || c.Bridge.Queue.WhenFull != "drop_oldest" {
		t.Errorf("queue defaults: %+v", c.Bridge.Queue)
	}
}

func TestBridgeConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Bridge.Remotes[0].Address = "tcp://x:1" }, "bridge.remotes[0].address: \"tcp://x:1\" is not mqtts://host:port"},
		{func(c *Config) { c.Bridge.Remotes[0].Address = "mqtts://x" }, "bridge.remotes[0].address: \"mqtts://x\" has no port"},
		{func(c *Config) { c.Bridge.Remotes[0].Name = "a/b" }, "bridge.remotes[0].name: \"a/b\" must be a non-empty name"},
		{func(c *Config) { c.Bridge.Remotes = append(c.Bridge.Remotes, c.Bridge.Remotes[0]) }, "bridge.remotes[1].name: \"cloud\" names two remotes"},
		{func(c *Config) { c.Bridge.Remotes[0].Protocol = "4" }, "bridge.remotes[0].protocol: \"4\" is not one of 5, 3.1.1"},
		{func(c *Config) { c.Bridge.Remotes[0].Rules[0].Direction = "both" }, "bridge.remotes[0].rules[0].direction: \"both\" is not one of out, in"},
		{func(c *Config) { c.Bridge.Remotes[0].Rules[0].QoS = 2 }, "bridge.remotes[0].rules[0].qos: 2: the bridge carries QoS 0 or 1"},
		{func(c *Config) { c.Bridge.Remotes[0].Rules[0].Filter = "a/#/b" }, "bridge.remotes[0].rules[0].filter:"},
		{func(c *Config) { c.Bridge.Remotes[0].Rules[0].RemotePrefix = "g/+/" }, "bridge.remotes[0].rules[0].remote_prefix: \"g/+/\" must not hold wildcards"},
		{func(c *Config) { c.Bridge.Remotes[0].Rules = nil }, "bridge.remotes[0].rules: is empty"},
		{func(c *Config) { c.Bridge.Remotes[0].CA = "/nonexistent/ca.pem" }, "bridge.remotes[0].ca: cannot read /nonexistent/ca.pem"},
		{func(c *Config) { c.Bridge.Remotes[0].Key = "/etc/hostname" }, "bridge.remotes[0].cert: is empty while .key is set"},
		{func(c *Config) { c.Bridge.Queue.WhenFull = "block" }, "bridge.queue.when_full: \"block\" is not one of drop_oldest, refuse_new"},
		{func(c *Config) { c.Bridge.Queue.Sync = "always" }, "bridge.queue.sync: \"always\" is not one of batch"},
		{func(c *Config) { c.Bridge.Queue.MaxBytes = 1 << 20 }, "bridge.queue.max_bytes: 1048576 must be at least 4 × bridge.queue.segment_bytes"},
	} {
		c := Default()
		c.Gateway.ID = "gw"
		c.Bridge.Remotes = []Remote{{Name: "cloud", Address: "mqtts://cloud.example:8883",
			Rules: []BridgeRule{{Filter: "devices/#", Direction: "out", QoS: 1}}}}
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, err)
		}
	}
}
