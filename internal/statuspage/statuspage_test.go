package statuspage

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRenderOverview: every certificate is a row with its state, days
// left and a timeline; a failing one shows its error in full and the fix;
// text from the state is escaped.
func TestRenderOverview(t *testing.T) {
	p := samplePage(60)
	p.Certificates[7].Last.Error += "\n    <script>alert(1)</script>"
	var b bytes.Buffer
	if err := RenderOverview(&b, p); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	if rows, tls := strings.Count(html, `<tr class="c `), strings.Count(html, `<i class="tl`); rows != 60 || tls != 60 {
		t.Errorf("%d rows, %d timelines; want 60 of each", rows, tls)
	}
	for _, want := range []string{
		`<span class="st ok">OK</span>`, `<span class="st failing">Failing</span>`, `<span class="st broken">Broken</span>`,
		`<span class="st renewing">Renewing</span>`,
		"Timeout (path web)", "or use a DNS path (dns-01 needs no inbound port)", // the error, and its explanation
		"<b>Fix:</b> see the error", "<b>Problem:</b> its record renewal/site0042.example.com.json cannot be read",
		"83 of 90 days left<br>expires 2026-08-11", `--a:`, `--p:`, "renewal 2026-07-13 11:00Z (in 53d)",
		"&lt;script&gt;alert(1)&lt;/script&gt;", // escaped
		"nftables", "site0007.example.com",      // the window
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the overview lacks %q", want)
		}
	}
	if strings.Contains(html, "<script>alert") {
		t.Error("text from the state reached the page unescaped")
	}
}

// TestRenderDetail: a certificate's page lists its attempts with their
// steps, its versions and its deploy targets.
func TestRenderDetail(t *testing.T) {
	var b bytes.Buffer
	if err := RenderDetail(&b, sampleDetail()); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{
		"site0007.example.com", "failed</span> at validation", "renewed</span> v3", "wait 1ms · obtain 3.9s · deploy 300ms",
		"0a1b2c", "<b>live</b>", "/etc/haproxy/certs/site.pem", "permission denied", `<span class="st ok">ok</span>`,
		`href="../static/style.css"`, `href="../"`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the certificate's page lacks %q", want)
		}
	}
}

// TestPageSize: the overview of 1,000 certificates stays under 1 MB.
func TestPageSize(t *testing.T) {
	var b bytes.Buffer
	if err := RenderOverview(&b, samplePage(1000)); err != nil {
		t.Fatal(err)
	}
	if b.Len() >= 1_000_000 {
		t.Errorf("the overview of 1,000 certificates is %d bytes, want under 1 MB", b.Len())
	}
	t.Logf("overview of 1,000 certificates: %d bytes", b.Len())
}

func TestHandler(t *testing.T) {
	h, err := Handler(Options{Source: fixedSource{page: samplePage(3), detail: sampleDetail()}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	tests := []struct {
		method, path string
		code         int
		ctype, body  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8", "site0002.example.com"},
		{"HEAD", "/", 200, "text/html; charset=utf-8", ""},
		{"GET", "/status.json", 200, "application/json", `"schema": 1`},
		{"GET", "/certificate/site0007.example.com", 200, "text/html; charset=utf-8", "Attempts"},
		{"GET", "/certificate/site0007.example.com/status.json", 200, "application/json", `"history": [`},
		{"GET", "/certificate/nothere.example.com", 404, "text/plain; charset=utf-8", "no such certificate"},
		{"GET", "/certificate/nothere.example.com/status.json", 404, "text/plain; charset=utf-8", "no such certificate"},
		{"GET", "/static/style.css", 200, "text/css; charset=utf-8", ".tl"},
		{"GET", "/static/page.js", 200, "text/javascript; charset=utf-8", "filter"},
		{"GET", "/static/overview.html", 404, "", ""},
		{"GET", "/elsewhere", 404, "", ""},
		{"POST", "/", 405, "", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
			continue
		}
		if tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", tt.method, tt.path, resp.Header.Get("Content-Type"), tt.ctype)
		}
		if !strings.Contains(string(body), tt.body) {
			t.Errorf("%s %s: body lacks %q", tt.method, tt.path, tt.body)
		}
		if tt.code == 200 && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s %s: no Content-Security-Policy", tt.method, tt.path)
		}
	}
	// The JSON is the data, whole.
	resp, err := http.Get(srv.URL + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p Page
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Schema != Schema || len(p.Certificates) != 3 || p.Certificates[1].Last == nil || !p.Certificates[1].Last.OK {
		t.Errorf("/status.json = %+v", p)
	}
}

// TestRedact: a secret quoted anywhere in the data is taken out.
func TestRedact(t *testing.T) {
	d := sampleDetail()
	d.Certificate.Problem = "failed with key s3cr3t-value inside"
	d.History[0].Error = "tsig s3cr3t-value-longer rejected"
	d.Deploy[1].Error = "s3cr3t-value"
	d.Notes = []string{"note s3cr3t-value"}
	Redact(&d, []string{"s3cr3t-value", "s3cr3t-value-longer", ""})
	data, _ := json.Marshal(d)
	if strings.Contains(string(data), "s3cr3t") {
		t.Errorf("a secret is left: %s", data)
	}
	if d.History[0].Error != "tsig [redacted] rejected" || d.Deploy[1].Error != Redacted {
		t.Errorf("redacted to %q and %q", d.History[0].Error, d.Deploy[1].Error)
	}
}
