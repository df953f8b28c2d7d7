// Command mochi is the interop baseline: mochi-mqtt (the copy the gateway is
// built on, third_party/mochi) with no hooks but the allow-all auth hook, on
// one plain TCP listener (and a TLS one with -tls-addr). interop/run.sh runs
// the Paho suite against it and against `edgeid serve` in the same run;
// scripts/bench-lean.sh measures it beside the gateway.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	level := flag.String("log-level", "warn", "debug, info, warn or error")
	tlsAddr := flag.String("tls-addr", "", "TLS listen address (with -tls-cert and -tls-key); empty for none")
	tlsCert := flag.String("tls-cert", "", "PEM certificate of the TLS listener")
	tlsKey := flag.String("tls-key", "", "PEM key of the TLS listener")
	flag.Parse()
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		log.Fatal(err)
	}

	server := mqtt.New(&mqtt.Options{
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		log.Fatal(err)
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		log.Fatal(err)
	}
	if *tlsAddr != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Fatalf("-tls-cert, -tls-key: %v", err)
		}
		if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: *tlsAddr,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})); err != nil {
			log.Fatal(err)
		}
	}
	if err := server.Serve(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("mochi listening on %s\n", *addr)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = server.Close()
}
