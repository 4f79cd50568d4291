package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// Member is one live node of the fleet, as it describes itself under
// <prefix>/fleet/nodes/<name>.
type Member struct {
	Name    string    `json:"name"`
	Started time.Time `json:"started"`
	Version string    `json:"version"`
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
}

// answer is the value of <prefix>/fleet/answers/<id>.
type answer struct {
	Path      string        `json:"path"`
	Orderer   string        `json:"orderer"`
	Challenge wireChallenge `json:"challenge"`
}

type wireChallenge struct {
	Type             string    `json:"type"`
	Identifier       wireIdent `json:"identifier"`
	Token            string    `json:"token"`
	KeyAuthorization string    `json:"key_authorization"`
	AccountURL       string    `json:"account_url,omitempty"`
}

type wireIdent struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// ack is the value of <prefix>/fleet/acks/<id>/<node>.
type ack struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func toWire(ch solve.Challenge) wireChallenge {
	return wireChallenge{Type: ch.Type, Identifier: wireIdent{Type: ch.Identifier.Type, Value: ch.Identifier.Value},
		Token: ch.Token, KeyAuthorization: ch.KeyAuthorization, AccountURL: ch.AccountURL}
}

// challenge returns the challenge a follower presents, after checking what
// it can: anyone who can write etcd can publish an answer.
func (w wireChallenge) challenge() (solve.Challenge, error) {
	if !mirrored(w.Type) {
		return solve.Challenge{}, fmt.Errorf("challenge type %q is not one the fleet mirrors (http-01, tls-alpn-01)", w.Type)
	}
	id, err := ident.Parse(w.Identifier.Value)
	if err != nil {
		return solve.Challenge{}, fmt.Errorf("identifier: %w", err)
	}
	if id.Type != w.Identifier.Type || id.Value != w.Identifier.Value {
		return solve.Challenge{}, fmt.Errorf("identifier %s %q is not in canonical form", w.Identifier.Type, w.Identifier.Value)
	}
	if !solve.ValidToken(w.Token) {
		return solve.Challenge{}, fmt.Errorf("token %q is not base64url", w.Token)
	}
	if !strings.HasPrefix(w.KeyAuthorization, w.Token+".") {
		return solve.Challenge{}, errors.New("the key authorization does not start with the token")
	}
	return solve.Challenge{Type: w.Type, Identifier: id, Token: w.Token, KeyAuthorization: w.KeyAuthorization, AccountURL: w.AccountURL}, nil
}

// mirrored reports whether answers of challenge type typ must be presented
// by every node: those the CA fetches from the host it connects to.
func mirrored(typ string) bool { return typ == solve.HTTP01 || typ == solve.TLSALPN01 }

// answerID names the answer of ch published by orderer for path: unique
// per challenge (the CA's token is), the same for Present and CleanUp.
func answerID(orderer, path string, ch solve.Challenge) string {
	h := sha256.New()
	for _, s := range []string{orderer, path, ch.Type, ch.Identifier.Type, ch.Identifier.Value, ch.Token} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// keys are the names under <prefix>/fleet/.
type keys struct{ base string } // "<prefix>/fleet/"

func (k keys) nodes() string              { return k.base + "nodes/" }
func (k keys) node(name string) string    { return k.nodes() + name }
func (k keys) answers() string            { return k.base + "answers/" }
func (k keys) answer(id string) string    { return k.answers() + id }
func (k keys) acks(id string) string      { return k.base + "acks/" + id + "/" }
func (k keys) ack(id, node string) string { return k.acks(id) + node }
func (k keys) idOf(answerKey []byte) string {
	return strings.TrimPrefix(string(answerKey), k.answers())
}
func (k keys) nodeOf(nodeKey []byte) string       { return strings.TrimPrefix(string(nodeKey), k.nodes()) }
func (k keys) ackNode(id string, b []byte) string { return strings.TrimPrefix(string(b), k.acks(id)) }

var nodeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidNodeName checks that name can name a node: a DNS label in lower
// case (letters, digits, inner hyphens, at most 63 characters).
func ValidNodeName(name string) error {
	if name == "" {
		return errors.New("fleet node name is empty: give each node a name of its own, e.g. its host name (web1)")
	}
	if !nodeName.MatchString(name) {
		return fmt.Errorf("fleet node name %q: use lower-case letters, digits and inner hyphens, at most 63 characters (a DNS label, e.g. web1)", name)
	}
	return nil
}
