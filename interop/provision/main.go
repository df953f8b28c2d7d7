// Command provision writes what interop/run.sh needs to run the Paho
// interoperability suite against an EdgeID gateway: a provisioning batch
// (store.Batch, for `edgeid import`) with a local token issuer (a fresh ES256
// key), an "interop" class that grants every topic the suite uses, one device
// per client id the suite connects with, and a credentials file that maps each
// of those client ids to a username and an access token (the password).
//
// Each token acts for its device itself (sub = client_id): a device with no
// owner may only hold tokens whose subject is the device.
//
// The suite's client ids and what becomes of them:
//
//	"myclientid", "myclientid2"  devices of the same id
//	"clean retained"             device "clean_retained": a device id may not
//	                             hold whitespace (store.validID); the Python
//	                             adapter sends this id instead, to both brokers
//	""                           a token for device "interop-anon": EdgeID
//	                             assigns the token's device id
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/edgeid/edgeid/edge/demo"
	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

const (
	issuerURL = "https://interop.edgeid.invalid"
	audience  = "edgeid" // auth.audiences default
	class     = "interop"
)

// clients maps the client id the suite sends to the device id EdgeID knows.
var clients = map[string]string{
	"myclientid":     "myclientid",
	"myclientid2":    "myclientid2",
	"clean retained": "clean_retained",
	"":               "interop-anon",
}

// rules are what the interop class and every token grant: everything under
// the wildcard, plus the $-topic the $-topics test publishes to ("#" does not
// match topics whose first level starts with '$').
var rules = []policy.Rule{
	{Filter: "#", Actions: policy.Publish | policy.Subscribe},
	{Filter: "$TopicA/#", Actions: policy.Publish | policy.Subscribe},
}

// Credential is what the Python adapter puts into CONNECT for a client id.
type Credential struct {
	ClientID string `json:"client_id"` // the id to send (differs for "clean retained")
	Username string `json:"username"`
	Password string `json:"password"` // the access token
}

func main() {
	out := flag.String("out", ".", "directory to write batch.json and credentials.json to")
	ttl := flag.Duration("ttl", 6*time.Hour, "token lifetime (at most auth.max_token_lifetime)")
	flag.Parse()
	if err := run(*out, *ttl); err != nil {
		log.Fatal(err)
	}
}

func run(out string, ttl time.Duration) error {
	iss, err := demo.NewIssuer(issuerURL, "interop-1")
	if err != nil {
		return err
	}
	rec, err := iss.Record()
	if err != nil {
		return err
	}
	batch := store.Batch{
		Classes: []store.DeviceClass{{Name: class, Description: "Paho interoperability suite: every topic", Permissions: rules}},
		Issuers: []store.Issuer{rec},
	}
	scope := policy.FormatScope(rules)
	creds := map[string]Credential{}
	ids := make([]string, 0, len(clients))
	for cid := range clients {
		ids = append(ids, cid)
	}
	sort.Strings(ids)
	for _, cid := range ids {
		dev := clients[cid]
		batch.Devices = append(batch.Devices, store.Device{ID: dev, Class: class, Status: store.DeviceActive})
		tok, err := iss.Mint(iss.Claims(dev, dev, audience, scope, ttl), nil)
		if err != nil {
			return err
		}
		send := dev
		if cid == "" {
			send = ""
		}
		creds[cid] = Credential{ClientID: send, Username: dev, Password: tok}
	}
	if err := writeJSON(filepath.Join(out, "batch.json"), batch); err != nil {
		return err
	}
	return writeJSON(filepath.Join(out, "credentials.json"), creds)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
