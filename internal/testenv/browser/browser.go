// Package browser drives headless Chromium (Debian's chromium package)
// for tests of what a person sees, through chromedp. A test binary starts
// one Chromium, the first time a test asks for a tab, and every test gets
// tabs of it; Main stops it when the tests are done.
package browser

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/detour-acme/detour/internal/testenv"
)

var shared struct {
	mu      sync.Mutex
	ctx     context.Context // the browser's first tab: it owns the process
	cancel  func()
	started bool
}

// tabTimeout bounds everything a test does in one tab.
const tabTimeout = 2 * time.Minute

// TabOptions configure a tab.
type TabOptions struct {
	// NoJavaScript disables scripts in the tab: what the page shows
	// without them.
	NoJavaScript bool
	// Width and Height are the viewport in CSS pixels; default 1280x800.
	Width, Height int64
	// Headers are sent with every request of the tab (an Authorization
	// header, say).
	Headers map[string]string
}

// Tab opens a tab in the test binary's Chromium, starting it on first
// use, and closes the tab when tb ends. A missing chromium fails tb with
// the Debian package to install.
func Tab(tb testing.TB, o TabOptions) context.Context {
	tb.Helper()
	bctx := start(tb)
	tab, closeTab := chromedp.NewContext(bctx)
	tb.Cleanup(closeTab)
	// Whatever a test waits for in the tab, it fails after this rather
	// than hang (a derived context leaves the tab open).
	ctx, cancel := context.WithTimeout(tab, tabTimeout)
	tb.Cleanup(cancel)
	if o.Width == 0 {
		o.Width, o.Height = 1280, 800
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(o.Width, o.Height)); err != nil {
		tb.Fatalf("opening a Chromium tab: %v", err)
	}
	if len(o.Headers) > 0 {
		h := network.Headers{}
		for k, v := range o.Headers {
			h[k] = v
		}
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			tb.Fatalf("enabling the network domain: %v", err)
		}
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h}); err != nil {
			tb.Fatalf("setting the tab's headers: %v", err)
		}
	}
	if o.NoJavaScript {
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			tb.Fatalf("disabling JavaScript in the tab: %v", err)
		}
	}
	return ctx
}

func start(tb testing.TB) context.Context {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.started {
		return shared.ctx
	}
	exe := testenv.RequireBinary(tb, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		tb.Fatalf("starting Chromium (%s): %v", exe, err)
	}
	shared.ctx, shared.started = bctx, true
	shared.cancel = func() {
		cancelBrowser()
		cancelAlloc()
	}
	return bctx
}

// Main runs the tests of m and then stops the Chromium they shared; call
// it from TestMain: os.Exit(browser.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.started {
		shared.cancel()
		shared.started = false
	}
	return code
}
