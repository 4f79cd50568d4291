//go:build !unix

package router

// fdLimit is 0 (unknown) where there is no RLIMIT_NOFILE: no descriptor
// reserve is kept.
func fdLimit() int { return 0 }

// connFD is -1: descriptors are not numbered from 0 here.
func connFD(any) int { return -1 }
