//go:build nodemo

package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/viper"
)

// The .deb's edgeid is built with the nodemo tag (make deb): the appliance
// carries no embedded authority. Its code, templates and their
// initialisation were ~1.5 MB of the binary, mapped and resident on every
// gateway (docs/BENCHMARKS.md, "Lean connections"), and authority code a
// gateway never runs is attack surface it need not have.

const defaultDemoAuthority = "127.0.0.1:9443"

type demoOptions struct{ AuthorityListen string }

func serveDemo(context.Context, *viper.Viper, io.Writer, demoOptions) error {
	return errors.New("--demo: this edgeid was built without the embedded demo (the .deb's is); run the demo from the source tree: make run")
}
