// Command edgeid-sensor is a small device simulator for trying a gateway by
// hand: it connects one MQTT 5 client with a token (authentication method
// "ace", the token as Authentication Data), optionally publishes at QoS 1, and
// prints the CONNACK and every PUBACK reason code.
//
//	edgeid-sensor connect --broker 127.0.0.1:1883 --client-id thermo-1 --token "$TOKEN" \
//	    --publish devices/thermo-1/telemetry/temp --message 21.5 --count 3
//
// It exits 1 when the connection is refused or any PUBACK is a failure.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, errUsage) {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeid-sensor: "+err.Error())
		os.Exit(1)
	}
}

const usage = `usage: edgeid-sensor connect --broker HOST:PORT --client-id ID [--token TOKEN]
                             [--publish TOPIC [--message M] [--count N]] [--timeout D]
       edgeid-sensor keygen --out device.jwk      (prints the public key to register)
       edgeid-sensor pair --authority URL [--fingerprint SHA256] --device ID --key device.jwk
                          --broker HOST:PORT [--count N] [--listen D]
       edgeid-sensor load --broker HOST:PORT --tokens FILE [--rate R] [--duration D] [--hold D] [--qos Q]
       edgeid-sensor pubsub --broker HOST:PORT [--pairs 8] [--qos 0] [--size 64] [--duration 5s | --messages N]
                            [--tokens FILE | --username U --password P] [--sources N] [--client raw|paho]
       edgeid-sensor idle --broker HOST:PORT --sessions N [--tokens FILE | --username U --password P]
                          [--sources N] [--concurrency C] [--hold D]
       edgeid-sensor provision --out DIR [--pairs 8] [--sessions N]   (batches, tokens, Mosquitto files for the two above)
       edgeid-sensor coap --gateway HOST:5684 --identity ID --key KEY [--publish TOPIC --count N] [--observe TOPIC --listen D]
       edgeid-sensor coap --udp --gateway HOST:5683 --token TOKEN|@FILE --device-key device.jwk [--publish ...] [--observe ...]`

var errUsage = errors.New("usage")

// errRefused is returned when the broker refused the connection or a publish;
// the reason has been printed already.
type errRefused struct{ what string }

func (e errRefused) Error() string { return e.what }

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "keygen" {
		return keygen(args[1:], out)
	}
	if len(args) > 0 && args[0] == "pair" {
		return pairJourney(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "load" {
		return load(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "pubsub" {
		return pubsub(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "idle" {
		return idle(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "provision" {
		return provision(args[1:], out)
	}
	if len(args) > 0 && args[0] == "coap" {
		return coapJourney(ctx, args[1:], out)
	}
	if len(args) == 0 || args[0] != "connect" {
		return errUsage
	}
	fs := pflag.NewFlagSet("connect", pflag.ContinueOnError)
	broker := fs.String("broker", "127.0.0.1:1883", "gateway MQTT address (plain TCP)")
	clientID := fs.String("client-id", "", "MQTT client id (the device id)")
	token := fs.String("token", "", `access token, sent with authentication method "ace"; empty: connect without one`)
	topic := fs.String("publish", "", "topic to publish to at QoS 1 after connecting")
	message := fs.String("message", "", "payload to publish")
	count := fs.Int("count", 1, "how many times to publish")
	timeout := fs.Duration("timeout", 10*time.Second, "time allowed for the connection and each acknowledgement")
	if err := fs.Parse(args[1:]); errors.Is(err, pflag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if *clientID == "" || fs.NArg() > 0 || *count < 0 {
		return errUsage
	}

	dctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", *broker)
	if err != nil {
		return err
	}
	disconnected := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn:               conn,
		OnServerDisconnect: func(d *paho.Disconnect) { disconnected <- d },
		OnClientError:      func(error) {},
	})
	cp := &paho.Connect{ClientID: *clientID, KeepAlive: 30, CleanStart: true}
	if *token != "" {
		cp.Properties = &paho.ConnectProperties{AuthMethod: "ace", AuthData: []byte(*token)}
	}
	ca, err := c.Connect(dctx, cp)
	if ca == nil {
		conn.Close()
		return fmt.Errorf("connect to %s: %w", *broker, err)
	}
	fmt.Fprintf(out, "CONNACK 0x%02x %s%s\n", ca.ReasonCode, connackReason(ca.ReasonCode), reasonString(ca.Properties))
	if ca.ReasonCode >= 0x80 {
		return errRefused{fmt.Sprintf("connection refused (0x%02x)", ca.ReasonCode)}
	}
	defer c.Disconnect(&paho.Disconnect{ReasonCode: 0})

	failed := 0
	for i := 0; *topic != "" && i < *count; i++ {
		pctx, cancel := context.WithTimeout(ctx, *timeout)
		r, err := c.Publish(pctx, &paho.Publish{Topic: *topic, Payload: []byte(*message), QoS: 1})
		cancel()
		if r == nil {
			select {
			case d := <-disconnected:
				return fmt.Errorf("publish %d: the broker disconnected: DISCONNECT 0x%02x", i+1, d.ReasonCode)
			default:
			}
			return fmt.Errorf("publish %d: %w", i+1, err)
		}
		var why string
		if r.Properties != nil && r.Properties.ReasonString != "" {
			why = " (" + r.Properties.ReasonString + ")"
		}
		fmt.Fprintf(out, "PUBACK %d 0x%02x %s%s\n", i+1, r.ReasonCode, pubackReason(r.ReasonCode), why)
		if r.ReasonCode >= 0x80 {
			failed++
		}
	}
	if failed > 0 {
		return errRefused{fmt.Sprintf("%d of %d publishes refused", failed, *count)}
	}
	return nil
}

func reasonString(p *paho.ConnackProperties) string {
	if p == nil || p.ReasonString == "" {
		return ""
	}
	return " (" + p.ReasonString + ")"
}

// connackReason is the short name of a CONNACK reason code (MQTT 5, 3.2.2.2).
func connackReason(code byte) string {
	return shortReason((&packets.Connack{ReasonCode: code}).Reason())
}

// pubackReason is the short name of a PUBACK reason code (MQTT 5, 3.4.2.1).
func pubackReason(code byte) string {
	switch code {
	case 0x00:
		return "Success"
	case 0x10:
		return "No matching subscribers"
	case 0x80:
		return "Unspecified error"
	case 0x83:
		return "Implementation specific error"
	case 0x87:
		return "Not authorized"
	case 0x90:
		return "Topic Name invalid"
	case 0x91:
		return "Packet identifier in use"
	case 0x97:
		return "Quota exceeded"
	case 0x99:
		return "Payload format invalid"
	}
	return "Unknown"
}

// shortReason keeps the name before paho's " - explanation".
func shortReason(s string) string {
	if s == "" {
		return "Unknown"
	}
	name, _, _ := strings.Cut(s, " - ")
	return name
}
