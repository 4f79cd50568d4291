package firewall

import (
	"context"
	"errors"

	"github.com/detour-acme/detour/internal/firewall/nstest"
)

// netns is a namespace the test created.
type netns = nstest.NS

var (
	newNetns       = nstest.New
	newPair        = nstest.NewPair
	requireCommand = nstest.RequireCommand
)

// Addresses of a pair.
const (
	webAddr4 = nstest.WebAddr4
	webAddr6 = nstest.WebAddr6
)

// runnerIn returns a Runner that runs commands inside the namespace.
func runnerIn(n *netns) Runner { return nsRunner{n.Name} }

type nsRunner struct{ ns string }

func (r nsRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	out, err := ExecRunner{}.Run(ctx, Command{Name: "ip", Args: append([]string{"netns", "exec", r.ns, c.Name}, c.Args...), Env: c.Env})
	var ce *CommandError
	if errors.As(err, &ce) {
		ce.Command = c
	}
	return out, err
}

// userRuleset is a user's nftables ruleset whose input chain drops what
// it does not accept; loopback is not accepted, so connections inside the
// namespace show what the firewall lets through.
const userRuleset = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		tcp dport 22 accept
	}
}
`
