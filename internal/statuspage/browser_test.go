package statuspage

import (
	"bytes"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/detour-acme/detour/internal/testenv/browser"
)

// TestMain stops the Chromium the browser tests and benchmark share.
func TestMain(m *testing.M) { os.Exit(browser.Main(m)) }

// TestBrowserSample loads a sample overview in Chromium: every row is
// laid out with its timeline, with and without JavaScript.
func TestBrowserSample(t *testing.T) {
	h, err := Handler(Options{Source: fixedSource{page: samplePage(100), detail: sampleDetail()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, js := range []bool{true, false} {
		ctx := browser.Tab(t, browser.TabOptions{NoJavaScript: !js})
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#certs tr.c:last-of-type i.tl"))); err != nil {
			t.Fatal(err)
		}
		n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll("#certs tr.c i.tl"), chromedp.NodeVisible))
		if err != nil {
			t.Fatal(err)
		}
		if len(n) != 100 {
			t.Errorf("JavaScript %v: %d visible timelines, want 100", js, len(n))
		}
	}
}

// BenchmarkBrowserOverview1000 loads the overview of 1,000 certificates
// in Chromium until its last row is laid out and visible: what a person
// waits for. It reports the page's size.
func BenchmarkBrowserOverview1000(b *testing.B) {
	page := samplePage(1000)
	var html bytes.Buffer
	if err := RenderOverview(&html, page); err != nil {
		b.Fatal(err)
	}
	h, err := Handler(Options{Source: fixedSource{page: page, detail: sampleDetail()}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx := browser.Tab(b, browser.TabOptions{})
	last := chromedp.CSS("#certs tr.c:last-of-type i.tl")
	for b.Loop() {
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(last)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(html.Len()), "page-bytes")
}

// BenchmarkRenderOverview1000 is the server's part: rendering the HTML of
// 1,000 certificates.
func BenchmarkRenderOverview1000(b *testing.B) {
	page := samplePage(1000)
	var out bytes.Buffer
	for b.Loop() {
		out.Reset()
		if err := RenderOverview(&out, page); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(out.Len()), "page-bytes")
}
