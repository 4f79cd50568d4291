package rfc2136_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/testenv"
)

// BenchmarkPresentToPropagated measures the time from Present (the signed
// update sent to the primary) to Wait's return (every authoritative server
// answers the value). certbot's RFC 2136 plugin sleeps 60 s instead.
//
// With BIND's defaults the primary sends NOTIFYs and the secondary starts
// refreshes in ticks of 500ms (notify-rate and serial-query-rate 20), so
// that variant measures BIND's own latency as much as Detour's; the
// fast-refresh variant raises both rates to 1000 (ticks of 10ms).
func BenchmarkPresentToPropagated(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts testenv.BINDOptions
	}{
		{"primary", testenv.BINDOptions{Zones: zones}},
		{"primary+secondary", testenv.BINDOptions{Zones: zones, Secondary: true}},
		{"primary+secondary/fast-refresh", testenv.BINDOptions{Zones: zones, Secondary: true, FastRefresh: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bind := testenv.StartBIND(b, bc.opts)
			s := newSolver(b, bind, nil)
			ctx := b.Context()
			var worst time.Duration
			b.ResetTimer()
			for i := range b.N {
				ch := challenge(b, "bench.detour.test", fmt.Sprintf("key-auth-%d", i))
				start := time.Now()
				if err := s.Present(ctx, ch); err != nil {
					b.Fatal(err)
				}
				if err := s.Wait(ctx, ch); err != nil {
					b.Fatal(err)
				}
				worst = max(worst, time.Since(start))
				b.StopTimer()
				if err := s.CleanUp(ctx, ch); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
		})
	}
}
