package testenv

import (
	"fmt"
	"os"
	"testing"
)

// RunWithDetour is the body of a TestMain whose tests run the detour
// command: it builds the command once (BuildDetour) into a temporary
// directory, sets *bin to its path, runs the tests, removes the directory
// and exits with the tests' code.
func RunWithDetour(m *testing.M, bin *string) {
	os.Exit(runWithDetour(m, bin))
}

func runWithDetour(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "detour-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildDetour(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
