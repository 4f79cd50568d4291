package acmedns

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/bcrypt"
)

// BenchmarkDNSQuery measures TXT queries answered per second over UDP on
// loopback, each client goroutine on its own socket.
func BenchmarkDNSQuery(b *testing.B) {
	e := start(b, envOptions{})
	reg, err := e.api.Register(b.Context(), nil)
	if err != nil {
		b.Fatal(err)
	}
	e.mustUpdate(reg, value("bench1"))
	e.mustUpdate(reg, value("bench2"))
	q := new(dns.Msg).SetQuestion(dns.Fqdn(reg.Fulldomain), dns.TypeTXT)
	q.SetEdns0(1232, false)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("udp", e.dnsAddr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		c := &dns.Client{Timeout: 2 * time.Second}
		dc := &dns.Conn{Conn: conn}
		for pb.Next() {
			r, _, err := c.ExchangeWithConn(q, dc)
			if err != nil {
				b.Error(err)
				return
			}
			if len(r.Answer) != 2 {
				b.Errorf("answer %v, want two TXT records", r.Answer)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}

// BenchmarkUpdate measures POST /update requests per second over HTTP on
// loopback (keep-alive), at the default bcrypt cost and at the minimum one
// to show what the hash costs.
func BenchmarkUpdate(b *testing.B) {
	for _, cost := range []int{bcrypt.DefaultCost, bcrypt.MinCost} {
		b.Run(fmt.Sprintf("bcrypt-cost-%d", cost), func(b *testing.B) {
			e := start(b, envOptions{opts: Options{BcryptCost: cost, RateLimit: -1}})
			reg, err := e.api.Register(b.Context(), nil)
			if err != nil {
				b.Fatal(err)
			}
			body := jsonBody(map[string]string{"subdomain": reg.Subdomain, "txt": value("upd")})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, e.url+"/update", strings.NewReader(body))
					req.Header.Set("X-Api-User", reg.Username)
					req.Header.Set("X-Api-Key", reg.Password)
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("update: %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "updates/s")
		})
	}
}
