package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"time"
)

// Source reads the state the pages show. The agent's side implements it;
// every request reads afresh.
type Source interface {
	// Page returns the overview.
	Page(ctx context.Context) (Page, error)
	// Detail returns the page of certificate name, or an error wrapping
	// ErrNotFound when there is no such certificate.
	Detail(ctx context.Context, name string) (Detail, error)
}

// ErrNotFound reports a certificate neither configured nor recorded.
var ErrNotFound = errors.New("no such certificate")

// Options configure Handler.
type Options struct {
	Source Source // required
	Logger *slog.Logger
	// Timeout bounds reading the state for one request. Default 20s.
	Timeout time.Duration
}

// Paths the handler serves.
const (
	PathJSON       = "/status.json"
	PathCert       = "/certificate/"
	certJSONSuffix = "/status.json"
)

// csp allows the page nothing but its own style sheet and script, and
// style attributes (the timelines' positions): no inline script, no
// frames, no form posts, nothing from elsewhere.
const csp = "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; script-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the status pages, read-only:
//
//	GET /                                  the overview (HTML)
//	GET /status.json                       the overview (Page as JSON)
//	GET /certificate/{name}                a certificate's page (HTML)
//	GET /certificate/{name}/status.json    the same (Detail as JSON)
//	GET /static/{file}                     the style sheet and script
//
// It does no access control: wrap it with RequireBasicAuth, or serve it
// over TLS that requires a client certificate (TLSConfig), when it is
// reachable beyond this host.
func Handler(opts Options) (http.Handler, error) {
	if opts.Source == nil {
		return nil, errors.New("statuspage: Source is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 20 * time.Second
	}
	h := &handler{opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.overview)
	mux.HandleFunc("GET "+PathJSON, h.overviewJSON)
	mux.HandleFunc("GET "+PathCert+"{name}", h.detail)
	mux.HandleFunc("GET "+PathCert+"{name}"+certJSONSuffix, h.detailJSON)
	mux.HandleFunc("GET /static/{file}", serveStatic)
	return mux, nil
}

type handler struct{ opts Options }

func (h *handler) overview(w http.ResponseWriter, r *http.Request) {
	p, ok := h.page(w, r)
	if !ok {
		return
	}
	h.html(w, r, func(b *bytes.Buffer) error { return RenderOverview(b, p) })
}

func (h *handler) overviewJSON(w http.ResponseWriter, r *http.Request) {
	if p, ok := h.page(w, r); ok {
		h.json(w, p)
	}
}

func (h *handler) detail(w http.ResponseWriter, r *http.Request) {
	d, ok := h.certificate(w, r)
	if !ok {
		return
	}
	h.html(w, r, func(b *bytes.Buffer) error { return RenderDetail(b, d) })
}

func (h *handler) detailJSON(w http.ResponseWriter, r *http.Request) {
	if d, ok := h.certificate(w, r); ok {
		h.json(w, d)
	}
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) (Page, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.Timeout)
	defer cancel()
	p, err := h.opts.Source.Page(ctx)
	if err != nil {
		h.fail(w, r, err)
		return p, false
	}
	p.Schema = Schema
	return p, true
}

func (h *handler) certificate(w http.ResponseWriter, r *http.Request) (Detail, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), h.opts.Timeout)
	defer cancel()
	d, err := h.opts.Source.Detail(ctx, r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return d, false
	}
	d.Schema = Schema
	return d, true
}

// fail answers a request whose state could not be read.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	headers(w, "text/plain; charset=utf-8")
	if errors.Is(err, ErrNotFound) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(err.Error() + "\n"))
		return
	}
	h.opts.Logger.ErrorContext(r.Context(), "status page: reading the state", "path", r.URL.Path, "error", err)
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte("reading the state failed: " + err.Error() + "\n"))
}

// html renders into a buffer first, so that a template error is a 500
// and not half a page.
func (h *handler) html(w http.ResponseWriter, r *http.Request, render func(*bytes.Buffer) error) {
	var b bytes.Buffer
	if err := render(&b); err != nil {
		h.opts.Logger.ErrorContext(r.Context(), "status page: rendering", "path", r.URL.Path, "error", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	headers(w, "text/html; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

func (h *handler) json(w http.ResponseWriter, v any) {
	headers(w, "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// headers sets what every dynamic response carries.
func headers(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// serveStatic serves an embedded style sheet or script.
func serveStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if ext := path.Ext(name); ext != ".css" && ext != ".js" {
		http.NotFound(w, r)
		return
	}
	data, err := fs.ReadFile(assets, "assets/"+name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	headers(w, mime.TypeByExtension(path.Ext(name)))
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(data)
}
