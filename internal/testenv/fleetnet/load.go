package fleetnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Workers is the number of clients requesting side by side; 4 when
	// zero.
	Workers int
	// RootCAs is the trust pool for https URLs; nil for the system's.
	RootCAs *x509.CertPool
	// ServerName is the SNI and the name checked in the certificate; the
	// URL's host when empty.
	ServerName string
	// Want is the status a request must get to count as a success; 200
	// when zero.
	Want int
	// Timeout bounds each request; 5s when zero.
	Timeout time.Duration
	// Pause is how long each worker waits between its requests (also
	// after a failure, so that a dead node does not make a busy loop);
	// 2ms when zero.
	Pause time.Duration
}

// LoadStats are the counts of a Load.
type LoadStats struct {
	Requests int            // requests made (successes and failures)
	Failures int            // transport errors, short bodies and statuses other than Want
	Errors   []string       // the first few failures
	ByNode   map[string]int // successes by the node that answered; "" when none was named
	Elapsed  time.Duration  // from Load to Stop
}

// maxErrors is the number of failures LoadStats.Errors keeps.
const maxErrors = 5

// Load is a client in the test's namespace hammering the balancer,
// started by Net.Load.
type Load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	mu    sync.Mutex
	stats LoadStats
	nodes map[string]bool
}

// Load requests url over and over from the test's namespace until Stop
// (or ctx ends), with keep-alive off so that every request is a new
// connection the balancer places anew. Every connection goes to the
// balancer on the URL's port, whatever the URL's host (which gives the
// Host header and, for https, the SNI): https://example.test/ works
// without a resolver. The node that answered is read from the body nginx
// gives for / (the node's name) or else from the NodeHeader header.
func (n *Net) Load(ctx context.Context, url string, opts LoadOptions) *Load {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Want == 0 {
		opts.Want = http.StatusOK
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Pause <= 0 {
		opts.Pause = 2 * time.Millisecond
	}
	lbAddr := n.LB.Addr
	dialer := &net.Dialer{Timeout: opts.Timeout}
	client := &http.Client{
		Timeout: opts.Timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: opts.RootCAs, ServerName: opts.ServerName},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort(lbAddr, port))
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cancel: cancel, start: time.Now(), stats: LoadStats{ByNode: map[string]int{}}, nodes: map[string]bool{}}
	for _, nd := range n.Nodes {
		l.nodes[nd.Name] = true
	}
	for range opts.Workers {
		l.wg.Go(func() {
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				node, err := l.request(ctx, client, url, opts.Want)
				if ctx.Err() != nil {
					return // a request cut short by Stop is no failure
				}
				l.record(node, err)
				select {
				case <-ctx.Done():
				case <-time.After(opts.Pause):
				}
			}
		})
	}
	return l
}

// request makes one request and returns the node that answered.
func (l *Load) request(ctx context.Context, client *http.Client, url string, want int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("reading the body: %w", err)
	}
	node := strings.TrimSpace(string(body))
	if !l.nodes[node] {
		node = resp.Header.Get(NodeHeader)
	}
	if resp.StatusCode != want {
		return node, fmt.Errorf("status %d from %q: %.200s", resp.StatusCode, node, body)
	}
	return node, nil
}

func (l *Load) record(node string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stats.Requests++
	if err != nil {
		l.stats.Failures++
		if len(l.stats.Errors) < maxErrors {
			l.stats.Errors = append(l.stats.Errors, err.Error())
		}
		return
	}
	l.stats.ByNode[node]++
}

// Stats returns the counts so far; the load goes on.
func (l *Load) Stats() LoadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Errors = append([]string(nil), s.Errors...)
	s.ByNode = make(map[string]int, len(l.stats.ByNode))
	for k, v := range l.stats.ByNode {
		s.ByNode[k] = v
	}
	s.Elapsed = time.Since(l.start)
	return s
}

// Stop ends the load, waits for its requests to end, and returns the
// counts. Requests cut short by Stop are not counted.
func (l *Load) Stop() LoadStats {
	l.cancel()
	l.wg.Wait()
	return l.Stats()
}

// String summarizes the stats for test logs.
func (s LoadStats) String() string {
	return fmt.Sprintf("%d requests in %v, %d failed %q, by node %v", s.Requests, s.Elapsed.Round(time.Millisecond), s.Failures, s.Errors, s.ByNode)
}
