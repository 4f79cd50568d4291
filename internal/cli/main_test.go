package cli_test

import (
	"os"
	"testing"

	"github.com/detour-acme/detour/internal/testenv/browser"
)

// TestMain stops the one Chromium the status page tests share.
func TestMain(m *testing.M) { os.Exit(browser.Main(m)) }
