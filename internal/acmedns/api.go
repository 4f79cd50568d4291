package acmedns

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Error codes of the JSON error bodies, as acme-dns sends them, plus the
// three of Detour's own (rate_limited, request_too_large, and db_error on
// registration).
const (
	errMalformedJSON  = "malformed_json_payload"
	errInvalidCIDR    = "invalid_allowfrom_cidr"
	errBadTXT         = "bad_txt"
	errForbidden      = "forbidden"
	errDB             = "db_error"
	errRateLimited    = "rate_limited"
	errTooLarge       = "request_too_large"
	errRegisterFailed = "registration_failed"
)

// Registration is a new account's credentials, as POST /register returns
// them. The password is shown only here: the server keeps its bcrypt hash.
type Registration struct {
	Username   string   `json:"username"`
	Password   string   `json:"password"`
	Fulldomain string   `json:"fulldomain"` // <subdomain>.<zone>, no trailing dot
	Subdomain  string   `json:"subdomain"`
	AllowFrom  []string `json:"allowfrom"`
}

// ErrInvalidAllowFrom is returned (wrapped) by Register for an allowfrom
// entry that is not a CIDR range.
var ErrInvalidAllowFrom = errors.New("invalid allowfrom range")

// Register creates an account whose updates are accepted only from
// addresses inside allowFrom (any address when it is empty), stores it and
// returns its credentials.
func (s *Server) Register(ctx context.Context, allowFrom []string) (Registration, error) {
	allow, err := parseAllowFrom(allowFrom)
	if err != nil {
		return Registration{}, fmt.Errorf("%w: %w", ErrInvalidAllowFrom, err)
	}
	password := newPassword()
	release, err := s.acquireHash(ctx)
	if err != nil {
		return Registration{}, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	release()
	if err != nil {
		return Registration{}, fmt.Errorf("hashing the new password: %w", err)
	}
	a := &account{
		Username:     newUUID(),
		PasswordHash: string(hash),
		Subdomain:    newUUID(),
		AllowFrom:    normalAllowFrom(allowFrom),
		Created:      s.now().UTC(),
		allow:        allow,
		hashed:       hash,
	}
	if err := a.saveLocked(ctx, s.st); err != nil {
		return Registration{}, err
	}
	s.mu.Lock()
	s.accounts[a.Username] = a
	s.mu.Unlock()
	s.log.Info("acme-dns account registered", "user", a.Username, "name", s.fulldomain(a), "allowfrom", a.AllowFrom)
	return Registration{
		Username:   a.Username,
		Password:   password,
		Fulldomain: strings.TrimSuffix(s.fulldomain(a), "."),
		Subdomain:  a.Subdomain,
		AllowFrom:  slices.Clone(a.AllowFrom),
	}, nil
}

// acquireHash takes a slot for one bcrypt computation: at most GOMAXPROCS
// run at once, so a burst of logins cannot starve the DNS responder.
func (s *Server) acquireHash(ctx context.Context) (release func(), err error) {
	select {
	case s.hashSem <- struct{}{}:
		return func() { <-s.hashSem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// update adds value to the TXT values of the account's name, or renews its
// expiry when present, and returns when it is stored and served. With a
// Storage that implements Modifier the change is made to the stored
// account, so that the values other Servers added meanwhile stay.
func (s *Server) update(ctx context.Context, a *account, value string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := s.now()
	exp := now.Add(s.lifetime)
	next := func(cur []txtRecord) []txtRecord {
		txt := liveTXT(cur, now)
		if i := slices.IndexFunc(txt, func(t txtRecord) bool { return t.Value == value }); i >= 0 {
			txt[i].Expires = exp
		} else {
			txt = append(txt, txtRecord{Value: value, Expires: exp})
		}
		if over := len(txt) - s.maxTXT; over > 0 {
			// Drop the values that expire first.
			slices.SortStableFunc(txt, func(x, y txtRecord) int { return x.Expires.Compare(y.Expires) })
			txt = txt[over:]
		}
		return txt
	}
	var txt []txtRecord
	if s.mod != nil {
		key := accountKey(a.Username)
		err := s.mod.Modify(ctx, key, func(old []byte) ([]byte, error) {
			if old == nil {
				return nil, errAccountGone
			}
			stored, err := decodeAccount(key, old)
			if err != nil {
				return nil, err
			}
			if !sameIdentity(a, stored) {
				return nil, errAccountGone // replaced meanwhile
			}
			txt = next(stored.TXT)
			stored.TXT = txt
			return stored.encode()
		})
		if errors.Is(err, errAccountGone) {
			return err
		}
		if err != nil {
			return fmt.Errorf("saving acme-dns account: %w", err)
		}
	} else {
		txt = next(a.TXT)
		old := a.TXT
		a.TXT = txt
		err := a.saveLocked(ctx, s.st)
		a.TXT = old
		if err != nil {
			return err
		}
	}
	s.serveLocked(a, txt)
	return nil
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r) {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		AllowFrom []string `json:"allowfrom"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, errMalformedJSON)
			return
		}
	}
	reg, err := s.Register(r.Context(), req.AllowFrom)
	switch {
	case errors.Is(err, ErrInvalidAllowFrom):
		writeError(w, http.StatusBadRequest, errInvalidCIDR)
		return
	case err != nil:
		s.log.Error("acme-dns registration failed", "source", r.RemoteAddr, "error", err)
		writeError(w, http.StatusInternalServerError, errRegisterFailed)
		return
	}
	raw, err := json.Marshal(reg)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "json_error")
		return
	}
	writeJSON(w, http.StatusCreated, raw)
}

func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r) {
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	src := remoteAddr(r)
	a, reason := s.authenticate(r.Context(), r.Header.Get("X-Api-User"), r.Header.Get("X-Api-Key"))
	var post struct {
		Subdomain string `json:"subdomain"`
		TXT       string `json:"txt"`
	}
	switch {
	case a == nil:
	case !a.allowed(src):
		reason = "source address outside the account's allowfrom ranges"
	case json.Unmarshal(body, &post) != nil:
		reason = "body is not JSON {\"subdomain\", \"txt\"}"
	case !strings.EqualFold(post.Subdomain, a.Subdomain):
		reason = "subdomain does not belong to the account"
	}
	if reason != "" {
		s.log.Info("acme-dns update refused", "source", src.String(), "user", r.Header.Get("X-Api-User"), "reason", reason)
		writeError(w, http.StatusUnauthorized, errForbidden)
		return
	}
	if !validTXT(post.TXT) {
		writeError(w, http.StatusBadRequest, errBadTXT)
		return
	}
	err := s.update(r.Context(), a, post.TXT)
	if errors.Is(err, errAccountGone) {
		s.log.Info("acme-dns update refused", "source", src.String(), "user", a.Username, "reason", "account removed from the storage")
		writeError(w, http.StatusUnauthorized, errForbidden)
		return
	}
	if err != nil {
		s.log.Error("acme-dns update failed", "user", a.Username, "error", err)
		writeError(w, http.StatusInternalServerError, errDB)
		return
	}
	s.log.Debug("acme-dns TXT updated", "user", a.Username, "name", s.fulldomain(a))
	writeJSON(w, http.StatusOK, []byte(`{"txt": "`+post.TXT+`"}`))
}

// dummyHash returns a hash at the server's cost to compare against when the
// user does not exist, so that an unknown user costs as much time as a
// wrong key.
func (s *Server) dummyHash() []byte {
	s.dummyOnce.Do(func() {
		s.dummy, _ = bcrypt.GenerateFromPassword([]byte(newPassword()), s.cost)
	})
	return s.dummy
}

// authenticate returns the account of user when key is its password, else
// nil and the reason (for the log only: the client always sees
// "forbidden").
func (s *Server) authenticate(ctx context.Context, user, key string) (*account, string) {
	if !validUUID(user) {
		return nil, "X-Api-User is not a registered user name"
	}
	if !validKey(key) {
		return nil, "X-Api-Key is not a 40-character key"
	}
	user = strings.ToLower(user)
	s.mu.RLock()
	a := s.accounts[user]
	s.mu.RUnlock()
	if a == nil && s.shared {
		// Registered through another Server, whose write this one has
		// not heard of yet: read it once (one read per failed lookup;
		// the bcrypt below costs more).
		var err error
		if a, err = s.refresh(ctx, user); err != nil {
			s.log.Warn("looking up an acme-dns account in the storage", "user", user, "error", err)
			a = nil
		}
	}
	var hash []byte
	if a != nil {
		hash = a.hashed
	} else {
		hash = s.dummyHash()
	}
	release, err := s.acquireHash(ctx)
	if err != nil {
		return nil, "request cancelled"
	}
	err = bcrypt.CompareHashAndPassword(hash, []byte(key))
	release()
	switch {
	case a == nil:
		return nil, "unknown user"
	case err != nil:
		return nil, "wrong key"
	}
	return a, ""
}

// admit applies the per-source rate limit, answering 429 when it is
// exceeded.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	if s.limit == nil {
		return true
	}
	if ok, _ := s.limit.Allow(remoteAddr(r)); ok {
		return true
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusTooManyRequests, errRateLimited)
	return false
}

// readBody reads the request body up to the size bound, answering 413 when
// it is larger.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, errTooLarge)
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, errMalformedJSON)
		return nil, false
	}
	return body, true
}

// remoteAddr returns the TCP peer's address; an unparsable one gives the
// invalid Addr, which no allowfrom range contains.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func writeError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, []byte(`{"error": "`+code+`"}`))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
