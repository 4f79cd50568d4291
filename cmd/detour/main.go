// Command detour obtains and renews TLS certificates over ACME on hosts where
// the usual way of proving a domain is blocked. See `detour --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/detour-acme/detour/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
