package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/detour-acme/detour/internal/router"
	"github.com/detour-acme/detour/internal/solve"
)

// Names the sandbox's port-80 front end dispatches on, one per http-01 path.
const (
	sandboxHTTPName      = "http.detour.test"
	sandboxWebrootName   = "webroot.detour.test"
	sandboxSideName      = "side.detour.test"
	sandboxStatelessName = "stateless.detour.test"
	sandboxForwardName   = "forward.detour.test"
	sandboxDoorName      = "door.detour.test"
	sandboxBackendName   = "www.detour.test"
	sandboxBackendBody   = "detour sandbox backend\n"
	sandboxChallengePath = "/.well-known/acme-challenge/"
)

// sandboxWeb is the web server the sandbox runs on the CA's http-01 port,
// standing in for the user's own: it sends each demo name to the path that
// answers it, as a real server's virtual hosts would.
type sandboxWeb struct {
	standalone http.Handler // http.detour.test and anything unknown (the IP)
	webroot    http.Handler // http.FileServer over the webroot directory
	side       http.Handler // reverse proxy to the side port, Host preserved
	stateless  http.Handler // "<token>.<thumbprint>", as `detour snippet stateless` configures
}

func (w *sandboxWeb) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	switch strings.ToLower(strings.TrimSuffix(host, ".")) {
	case sandboxWebrootName:
		w.webroot.ServeHTTP(rw, r)
	case sandboxSideName:
		w.side.ServeHTTP(rw, r)
	case sandboxStatelessName:
		w.stateless.ServeHTTP(rw, r)
	default:
		w.standalone.ServeHTTP(rw, r)
	}
}

// sideProxy forwards to the side port at addr, keeping the Host header, as
// the forwarding snippets of `detour snippet side-port` do.
func sideProxy(addr string) http.Handler {
	target := &url.URL{Scheme: "http", Host: addr}
	return &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
		pr.SetXForwarded()
	}}
}

// statelessHandler answers every http-01 request of the account whose key
// has thumbprint tp, with no state at all: the location block of the
// stateless snippet.
func statelessHandler(tp string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, sandboxChallengePath)
		if !ok || !solve.ValidToken(token) {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, token+"."+tp)
	})
}

// webrootHandler serves the challenge directory of a document root, and
// nothing else of it.
func webrootHandler(root string) http.Handler {
	fs := http.FileServer(http.Dir(root))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, sandboxChallengePath) {
			http.NotFound(w, r)
			return
		}
		fs.ServeHTTP(w, r)
	})
}

// server is something the sandbox serves in the background until stopped.
type server struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	err    error
}

// stop ends the server and waits for it; it is safe to call more than once.
func (s *server) stop() error {
	if s == nil {
		return nil
	}
	s.once.Do(func() {
		s.cancel()
		<-s.done
	})
	return s.err
}

// serveHTTP serves h on ln until stopped; stopping closes ln.
func serveHTTP(ln net.Listener, h http.Handler, log *slog.Logger) *server {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, done: make(chan struct{})}
	stopped := context.AfterFunc(ctx, func() {
		sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	})
	go func() {
		defer close(s.done)
		defer stopped()
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = fmt.Errorf("serving the sandbox web server on %s: %w", ln.Addr(), err)
		}
	}()
	return s
}

// serveRouter runs a Detour router on addr with the given routes until
// stopped. acme may be nil: the router then passes acme-tls/1 through like
// any other connection, as a user's TLS proxy in front of Detour would.
func serveRouter(addr string, acme router.ACMEResponder, routes []router.Route, log *slog.Logger) (*server, error) {
	t, err := router.NewTable(routes)
	if err != nil {
		return nil, err
	}
	r, err := router.New(router.Options{Logger: log, ACME: acme, DrainTimeout: time.Second}, t)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("binding %s for the sandbox router: %w (choose another tls-alpn-01 validation address)", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = r.Serve(ctx, ln)
	}()
	return s, nil
}

// startBackend starts the HTTPS server the front door passes connections
// to, with a throwaway self-signed certificate for sandboxBackendName.
func startBackend(log *slog.Logger) (*server, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating the backend key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: sandboxBackendName},
		DNSNames: []string{sandboxBackendName}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", fmt.Errorf("creating the backend certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("binding the sandbox backend: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"http/1.1"}}
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, sandboxBackendBody) })
	return serveHTTP(tls.NewListener(ln, cfg), h, log), ln.Addr().String(), nil
}

// checkPassThrough proves that a plain HTTPS request to addr reaches the
// backend untouched: the backend's own certificate and answer.
func checkPassThrough(ctx context.Context, addr string) error {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: sandboxBackendName, InsecureSkipVerify: true}, // the backend's certificate is self-signed; its name is checked below
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+sandboxBackendName+"/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("passing HTTPS through the front door: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the backend's answer through the front door: %w", err)
	}
	if cs := resp.TLS; cs == nil || len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName != sandboxBackendName || string(body) != sandboxBackendBody {
		return fmt.Errorf("the front door on %s did not pass HTTPS through to the backend unchanged", addr)
	}
	return nil
}
