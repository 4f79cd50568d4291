package config

import (
	"fmt"
	"time"
)

// Settings of a persist path (dns-persist-01, draft-ietf-acme-dns-persist).
const (
	// KeyPersistPolicy is "wildcard" (the record also authorizes *.<name> and
	// subdomains, §5) or unset.
	KeyPersistPolicy = "policy"
	// KeyPersistUntil is the RFC 3339 date (or date-time) after which the CA
	// ignores the record (persistUntil, §4.1).
	KeyPersistUntil = "persist_until"
)

func init() {
	k := kinds[KindPersist]
	k.check = checkPersist
	kinds[KindPersist] = k
}

// checkPersist validates the settings of a persist path.
func checkPersist(p Path) []SettingProblem {
	var probs []SettingProblem
	if v := p.Setting(KeyPersistPolicy); v != "" && v != "wildcard" {
		probs = append(probs, SettingProblem{Key: KeyPersistPolicy,
			Msg: fmt.Sprintf("%q is not a dns-persist-01 policy; write policy = \"wildcard\" (the record then also covers *.NAME and subdomains) or remove the line", v)})
	}
	if v := p.Setting(KeyPersistUntil); v != "" {
		t, err := ParsePersistUntil(v)
		switch {
		case err != nil:
			probs = append(probs, SettingProblem{Key: KeyPersistUntil, Msg: err.Error()})
		case !t.After(time.Now()):
			probs = append(probs, SettingProblem{Key: KeyPersistUntil,
				Msg: fmt.Sprintf("%s is in the past, so the CA would ignore the record; set a later date (and publish the record detour persist-record prints)", v)})
		}
	}
	return probs
}

// ParsePersistUntil parses a persist_until value: an RFC 3339 date-time
// ("2027-01-31T00:00:00Z") or a full date ("2027-01-31", midnight UTC).
func ParsePersistUntil(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 date; write e.g. \"2027-01-31\" or \"2027-01-31T00:00:00Z\"", v)
}
