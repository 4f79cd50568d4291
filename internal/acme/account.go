package acme

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	wire "github.com/mholt/acmez/v3/acme"
)

// Account is an ACME account: its URL and key (RFC 8555 §7.1.2).
type Account = wire.Account

// EAB is an External Account Binding: the key ID and base64url HMAC key the
// CA handed out (RFC 8555 §7.3.4).
type EAB struct {
	KeyID   string
	HMACKey string
}

// RegisterRequest describes an account to create or find.
type RegisterRequest struct {
	Key      crypto.Signer
	Email    string // optional contact
	AgreeTOS bool
	EAB      *EAB
}

// ErrEABRequired is returned when the CA requires External Account Binding
// and none was given.
var ErrEABRequired = errors.New("the CA requires External Account Binding")

// Register finds the account for req.Key, or creates it. Errors explain what
// the user must supply: terms agreement, EAB credentials, a valid contact.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (Account, error) {
	d, err := c.Directory(ctx)
	if err != nil {
		return Account{}, err
	}
	acct := Account{PrivateKey: req.Key}
	// Look first: re-registering an existing key must not need EAB again.
	if found, err := c.wire.GetAccount(ctx, acct); err == nil && found.Location != "" {
		found.PrivateKey = req.Key
		return found, nil
	} else if err != nil && !isProblem(err, wire.ProblemTypeAccountDoesNotExist) {
		return Account{}, fmt.Errorf("looking up account: %w", err)
	}
	if d.Meta != nil && d.Meta.TermsOfService != "" && !req.AgreeTOS {
		return Account{}, fmt.Errorf("the CA's terms of service (%s) must be accepted: set agree_tos = true in the config or pass --agree-tos", d.Meta.TermsOfService)
	}
	if req.Email != "" {
		acct.Contact = []string{"mailto:" + req.Email}
	}
	acct.TermsOfServiceAgreed = req.AgreeTOS
	if req.EAB != nil && req.EAB.KeyID != "" {
		if err := acct.SetExternalAccountBinding(ctx, c.wire, wire.EAB{KeyID: req.EAB.KeyID, MACKey: req.EAB.HMACKey}); err != nil {
			return Account{}, fmt.Errorf("binding external account %q: %w (check the EAB HMAC key: base64url, as the CA gave it)", req.EAB.KeyID, err)
		}
	} else if d.Meta != nil && d.Meta.ExternalAccountRequired {
		return Account{}, fmt.Errorf("%w: get a key ID and HMAC key from the CA's dashboard and set eab_kid and eab_hmac_key for this CA in the config (or --eab-kid and --eab-hmac-key)", ErrEABRequired)
	}
	created, err := c.wire.NewAccount(ctx, acct)
	if err != nil {
		if isProblem(err, wire.ProblemTypeExternalAccountRequired) {
			return Account{}, fmt.Errorf("%w: set eab_kid and eab_hmac_key for this CA (or --eab-kid and --eab-hmac-key): %w", ErrEABRequired, err)
		}
		if isProblem(err, wire.ProblemTypeInvalidContact) || isProblem(err, wire.ProblemTypeUnsupportedContact) {
			return Account{}, fmt.Errorf("the CA refused the contact address %q; give a working email with --email or email = in the config: %w", req.Email, err)
		}
		return Account{}, fmt.Errorf("creating account: %w", err)
	}
	created.PrivateKey = req.Key
	return created, nil
}

// Rollover replaces the account's key with newKey (RFC 8555 §7.3.5).
func (c *Client) Rollover(ctx context.Context, acct Account, newKey crypto.Signer) (Account, error) {
	if _, err := c.Directory(ctx); err != nil {
		return Account{}, err
	}
	out, err := c.wire.AccountKeyRollover(ctx, acct, newKey)
	if err != nil {
		return Account{}, fmt.Errorf("rolling over account key: %w", err)
	}
	out.PrivateKey = newKey
	return out, nil
}

// Deactivate deactivates the account (RFC 8555 §7.3.6). It cannot be undone.
func (c *Client) Deactivate(ctx context.Context, acct Account) (Account, error) {
	if _, err := c.Directory(ctx); err != nil {
		return Account{}, err
	}
	acct.Status = wire.StatusDeactivated
	acct.Contact = nil
	out, err := c.wire.UpdateAccount(ctx, acct)
	if err != nil {
		return Account{}, fmt.Errorf("deactivating account: %w", err)
	}
	out.PrivateKey = acct.PrivateKey
	return out, nil
}

// Thumbprint returns the account key's JWK thumbprint (RFC 7638), the second
// half of every key authorization.
func Thumbprint(acct Account) (string, error) { return acct.Thumbprint() }

// Problem is an ACME problem document (RFC 8555 §6.7); find it in an error
// with errors.As.
type Problem = wire.Problem

func isProblem(err error, typ string) bool {
	var p wire.Problem
	return errors.As(err, &p) && p.Type == typ
}

// IsProblem reports whether err carries an ACME problem of type typ (a full
// URN such as "urn:ietf:params:acme:error:rateLimited").
func IsProblem(err error, typ string) bool { return isProblem(err, typ) }
