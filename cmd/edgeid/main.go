// Command edgeid is the EdgeID gateway daemon (`edgeid serve`) and the
// technician's CLI, a thin client of the daemon's admin socket.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}

var commands = []command{
	{"serve", "run the gateway daemon", runServe},
	{"status", "show the daemon's status", runStatus},
	{"sessions", "list live MQTT sessions", runSessions},
	{"devices", "list devices in the store", runDevices},
	{"revocations", "list revocations held", runRevocations},
	{"bridge", "show the cloud bridge: each remote's link, queue and counters", runBridge},
	{"sync", "show the link to the authority; --now retries at once", runSync},
	{"pair", "open the pairing window (--window 5m), as the pair button does", runPair},
	{"kick", "disconnect every session of a device, subject or token", runKick},
	{"import", "apply a JSON batch of classes, devices, issuers, revocations", runImport},
	{"enroll", "register this gateway with an authority (one-time code)", runEnroll},
	{"doctor", "check configuration, store, listeners, clock, enrollment, authority, certificates, bridge remotes, disk", runDoctor},
	{"version", "print the version", runVersion},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: edgeid COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(os.Stderr, "\nrun edgeid COMMAND -h for its flags")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name == os.Args[1] {
			if err := c.run(ctx, os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "edgeid "+c.name+": "+err.Error())
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "edgeid: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}
