package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// leanPubClass is the class of the pubsub publishers: a thermostat's
// telemetry rule, with per-device limits (limits.device) the bench never
// reaches, so the gateway's throttle runs every check as shipped and
// refuses nothing. (The shipped throttle.device, 50 messages/s, would turn a
// publisher sending as fast as it can into a test of the throttle.)
const leanPubClass = "lean-publisher"

// provision writes what the bench needs to run the same clients against
// EdgeID, Mosquitto and mochi:
//
//	batch-000.json ...  store batches for `edgeid import` (4,000 devices each):
//	                    the demo classes, issuer and devices, the publishers'
//	                    class, <prefix>pub-<i> (class lean-publisher),
//	                    <prefix>sub-<i> (class service), <prefix>idle-NNNNN
//	                    (class thermostat)
//	pubsub.tokens       "client_id token" lines for the pairs
//	idle.tokens         "client_id token" lines for the idle sessions
//	mosquitto.passwd    "user:password" lines in clear (password pw-<user>),
//	                    for mosquitto_passwd -U
//	mosquitto.acl       the same grants as the EdgeID classes and tokens
//
// Every token is an ES256 JWT of the demo issuer, acting for its device
// (sub = client_id), granting only the device's own topics (a subscriber:
// its publisher's telemetry).
func provision(args []string, out io.Writer) error {
	fs := pflag.NewFlagSet("provision", pflag.ContinueOnError)
	dir := fs.String("out", ".", "directory to write to")
	pairs := fs.Int("pairs", 8, "publisher/subscriber pairs")
	sessions := fs.Int("sessions", 1000, "idle devices")
	prefix := fs.String("id-prefix", "lean-", "device id prefix")
	ttl := fs.Duration("ttl", 6*time.Hour, "token lifetime (at most the gateway's auth.max_token_lifetime)")
	per := fs.Int("batch", 4000, "devices per batch file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pairs < 0 || *sessions < 0 || *per < 1 || fs.NArg() > 0 {
		return errUsage
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	iss, err := demo.NewIssuer("https://issuer.lean-bench.invalid", "lean-1")
	if err != nil {
		return err
	}
	bundle, err := demo.Bundle(iss, "")
	if err != nil {
		return err
	}
	bundle.Classes = append(bundle.Classes, store.DeviceClass{Name: leanPubClass,
		Description: "bench publisher: thermostat telemetry, device limits out of the bench's reach",
		Permissions: []policy.Rule{{Filter: "devices/{device}/telemetry/#", Actions: policy.Publish}},
		Limits: &store.ClassLimits{Device: store.Rates{MessagesPerSecond: 1e9, MessageBurst: 1e9,
			BytesPerSecond: 1e12, ByteBurst: 1 << 40}}})
	var pubsubLines, idleLines, passwd []string
	acl := []string{"# Each device writes its own telemetry and reads its own commands.",
		"pattern write devices/%u/telemetry/#", "pattern read devices/%u/commands/#", ""}
	mint := func(id, class string, rules []policy.Rule) (string, error) {
		bundle.Devices = append(bundle.Devices, store.Device{ID: id, Class: class, Status: store.DeviceActive})
		passwd = append(passwd, id+":pw-"+id)
		tok, err := iss.Mint(iss.Claims(id, id, "edgeid", policy.FormatScope(rules), *ttl), nil)
		return id + " " + tok, err
	}
	for i := range *pairs {
		pub, sub := fmt.Sprintf("%spub-%d", *prefix, i), fmt.Sprintf("%ssub-%d", *prefix, i)
		telemetry := "devices/" + pub + "/telemetry/#"
		l, err := mint(pub, leanPubClass, []policy.Rule{{Filter: telemetry, Actions: policy.Publish}})
		if err != nil {
			return err
		}
		pubsubLines = append(pubsubLines, l)
		if l, err = mint(sub, "service", []policy.Rule{{Filter: telemetry, Actions: policy.Subscribe}}); err != nil {
			return err
		}
		pubsubLines = append(pubsubLines, l)
		acl = append(acl, "user "+sub, "topic read "+telemetry, "")
	}
	for i := range *sessions {
		id := fmt.Sprintf("%sidle-%05d", *prefix, i)
		l, err := mint(id, "thermostat", []policy.Rule{{Filter: "devices/" + id + "/telemetry/#", Actions: policy.Publish}})
		if err != nil {
			return err
		}
		idleLines = append(idleLines, l)
	}
	devices := bundle.Devices
	files := 0
	for i := 0; i == 0 || i < len(devices); i += *per {
		part := *bundle
		part.Devices = devices[i:min(i+*per, len(devices))]
		if i > 0 {
			part.Classes, part.Issuers, part.Users = nil, nil, nil
		}
		raw, err := json.Marshal(part)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*dir, fmt.Sprintf("batch-%03d.json", files)), raw, 0o600); err != nil {
			return err
		}
		files++
	}
	for name, lines := range map[string][]string{"pubsub.tokens": pubsubLines, "idle.tokens": idleLines,
		"mosquitto.passwd": passwd, "mosquitto.acl": acl} {
		if err := os.WriteFile(filepath.Join(*dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(out, "wrote %d batch file(s) (%d devices), %d pair(s), %d idle session(s) to %s\n",
		files, len(devices), *pairs, *sessions, *dir)
	return err
}
