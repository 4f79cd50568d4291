package agent

import (
	"context"
	"crypto/x509"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/store"
)

// RenewalInfoFunc returns the Plan.RenewalInfo that asks client for a
// certificate's window (RFC 9773 §4.2).
func RenewalInfoFunc(client *acme.Client) func(context.Context, store.Record, *x509.Certificate) (acme.RenewalInfo, error) {
	return func(ctx context.Context, _ store.Record, leaf *x509.Certificate) (acme.RenewalInfo, error) {
		return client.RenewalInfo(ctx, leaf)
	}
}
