// Command member runs one etcd member for package etcdtest's process mode
// (Options.Processes), so that a test can kill it with SIGKILL as a crash
// would. It reads its etcdtest.MemberConfig as JSON from the file named by
// its one argument, prints "ready" on standard output once the member
// serves, and stops gracefully on SIGTERM or SIGINT.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: %s CONFIG.json", os.Args[0])
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var mc etcdtest.MemberConfig
	if err := json.Unmarshal(raw, &mc); err != nil {
		return err
	}
	e, err := embed.StartEtcd(etcdtest.EmbedConfig(mc))
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("member %s did not become ready within 30s", mc.Name)
	}
	fmt.Println("ready")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
	case err := <-e.Err():
		return err
	}
	return nil
}
