//go:build !linux

package router

import (
	"context"
	"net"
)

// loops is empty off Linux: every connection is served by goroutines.
type loops struct{}

func newLoops(context.Context, *Router, *session) (*loops, error) { return nil, nil }
func (*loops) accept(*conn) bool                                  { return false }
func (*loops) listen(context.Context, net.Listener) (bool, error) { return false, nil }
func (*loops) adopt(*conn) bool                                   { return false }
func (*loops) close()                                             {}
func (*loops) shutdownAll()                                       {}

// loop and pair are empty off Linux: no connection is served by a loop.
type (
	loop struct{}
	pair struct{}
)

func evictPair(*loop, *pair, *loop) (closed, async bool) { return false, false }
