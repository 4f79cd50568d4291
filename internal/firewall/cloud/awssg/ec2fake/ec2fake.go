// Package ec2fake is a fake of the Amazon EC2 Query API, for tests. It is
// not AWS: it is a local HTTP server that implements only the five calls
// Detour's aws-sg firewall provider makes (DescribeSecurityGroups,
// DescribeInstances, DescribeSecurityGroupRules,
// AuthorizeSecurityGroupIngress, RevokeSecurityGroupIngress), and of each
// only the parameters Detour sends; any other action or parameter is
// refused with HTTP 400 so that a test notices a request it does not model.
//
// What it checks is what the EC2 API reference documents: a POST with a
// form-encoded body carrying Action and Version=2016-11-15 and the EC2
// query parameter names (GroupId, IpPermissions.1.IpRanges.1.CidrIp,
// Filter.1.Value.1, SecurityGroupRuleId.1, ...), and a Signature Version 4
// Authorization header for service "ec2" made with the fake's own
// credentials (AccessKeyID, SecretAccessKey). The signature itself is
// verified, so a request signed with any other secret is refused. Answers
// are EC2's XML documents and error format
// (<Response><Errors><Error><Code>...), with the element names the AWS SDK
// for Go v2 decodes.
//
// Two things AWS does that tests need are modelled: every new VPC security
// group has an egress rule allowing all traffic to 0.0.0.0/0 (AddGroup adds
// it), and DescribeSecurityGroupRules is eventually consistent
// (VisibleAfter). Failures are injected with Fail.
//
// A Server is safe for concurrent use.
package ec2fake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// apiVersion is the EC2 API version every request must name.
const apiVersion = "2016-11-15"

// ownerID is the account the fake's groups belong to.
const ownerID = "123456789012"

// Rule is an ingress rule of a security group, as the fake holds it.
type Rule struct {
	ID          string // security group rule ID, sgr-...
	Protocol    string // "tcp", "udp", "icmp" or "-1" (all)
	FromPort    int    // -1 for protocol "-1"
	ToPort      int    // -1 for protocol "-1"
	CIDR        string // the source: an IPv4 or IPv6 prefix
	Description string
}

// Request is one API call the fake received and authenticated.
type Request struct {
	Action string
	// Params is the form the request carried, Action and Version
	// included.
	Params url.Values
	// Region is the region of the request's SigV4 credential scope.
	Region string
	// Status is the HTTP status the fake answered.
	Status int
}

// Server is a running fake. Create one with New and Close it when done.
type Server struct {
	// URL is the base URL of the fake, for the client's endpoint.
	URL string
	// AccessKeyID and SecretAccessKey are the only credentials the fake
	// accepts: fixed test values (no session token). Do not change them.
	AccessKeyID, SecretAccessKey string

	ts *httptest.Server

	mu        sync.Mutex
	groups    map[string]string   // group ID -> name
	instances map[string][]string // instance ID -> group IDs
	rules     []*rule             // in creation order, revoked ones until unseen
	lastID    int
	lastReq   atomic.Int64
	requests  []Request
	fails     map[string][]*failure
	delay     int
}

type rule struct {
	Rule
	group  string
	egress bool
	// hidden counts the DescribeSecurityGroupRules calls that still do
	// not show an added rule.
	hidden int
	// revoked rules stay visible for lingering more calls.
	revoked   bool
	lingering int
}

// visible reports whether DescribeSecurityGroupRules shows r now.
func (r *rule) visible() bool {
	if r.revoked {
		return r.lingering > 0
	}
	return r.hidden == 0
}

type failure struct {
	status           int
	code, retryAfter string
	left             int
}

// New starts a fake on 127.0.0.1 with no groups or instances.
func New() *Server {
	s := &Server{
		AccessKeyID:     "AKIAEC2FAKEEXAMPLE01",
		SecretAccessKey: "ec2fake/secret/0123456789abcdefEXAMPLEKEY",
		groups:          map[string]string{},
		instances:       map[string][]string{},
		fails:           map[string][]*failure{},
	}
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.ts.URL
	return s
}

// Close shuts the fake down.
func (s *Server) Close() { s.ts.Close() }

// WriteCredentials writes an AWS shared credentials file holding the
// fake's credentials as profile "default" to dir and returns its path. It
// panics if the file cannot be written (dir is a test's TempDir).
func (s *Server) WriteCredentials(dir string) (path string) {
	path = filepath.Join(dir, "credentials")
	body := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s.AccessKeyID, s.SecretAccessKey)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		panic("ec2fake: writing credentials: " + err.Error())
	}
	return path
}

// AddGroup adds a VPC security group with AWS's default egress rule
// (all traffic to 0.0.0.0/0) and no ingress rules.
func (s *Server) AddGroup(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups[id] = name
	s.rules = append(s.rules, &rule{Rule: Rule{ID: s.newRuleID(), Protocol: "-1", FromPort: -1, ToPort: -1, CIDR: "0.0.0.0/0"}, group: id, egress: true})
}

// AddInstance adds an instance with the security groups given.
func (s *Server) AddInstance(id string, groupIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances[id] = slices.Clone(groupIDs)
}

// AddIngress adds an ingress rule to a group, visible at once, and
// returns its ID. Protocol "-1" means all traffic (from and to are then
// stored as -1); cidr is an IPv4 or IPv6 prefix.
func (s *Server) AddIngress(groupID, proto string, from, to int, cidr, description string) (ruleID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if proto == "-1" {
		from, to = -1, -1
	}
	r := &rule{Rule: Rule{ID: s.newRuleID(), Protocol: proto, FromPort: from, ToPort: to, CIDR: cidr, Description: description}, group: groupID}
	s.rules = append(s.rules, r)
	return r.ID
}

// Ingress returns the ingress rules groupID has now, in the order they
// were added, whatever DescribeSecurityGroupRules shows yet.
func (s *Server) Ingress(groupID string) []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Rule
	for _, r := range s.rules {
		if r.group == groupID && !r.egress && !r.revoked {
			out = append(out, r.Rule)
		}
	}
	return out
}

// Requests returns the authenticated requests received so far, oldest
// first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Fail makes the next times calls of action fail with the HTTP status and
// EC2 error code given, and a Retry-After header when retryAfter is not
// empty. Failures are checked after the request's shape and signature.
// It panics for an action the fake does not implement (a typo).
func (s *Server) Fail(action string, status int, code, retryAfter string, times int) {
	if allowed[action] == nil {
		panic("ec2fake: Fail: the fake does not implement " + action)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails[action] = append(s.fails[action], &failure{status: status, code: code, retryAfter: retryAfter, left: times})
}

// VisibleAfter makes the rules added or revoked from now on show their
// change in DescribeSecurityGroupRules only after n more calls of it
// (whatever those calls ask for), as EC2's eventual consistency can.
// Authorize and Revoke themselves see the change at once.
func (s *Server) VisibleAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = n
}

func (s *Server) newRuleID() string {
	s.lastID++
	return fmt.Sprintf("sgr-%017x", 0xf00d0000+s.lastID)
}

// apiError is an EC2 error answer.
type apiError struct {
	status        int
	code, message string
	retryAfter    string
}

func fail(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badParam(format string, args ...any) *apiError {
	return fail(http.StatusBadRequest, "InvalidParameterValue", format, args...)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	params, body, aerr := readForm(r)
	var region string
	if aerr == nil {
		region, aerr = s.authenticate(r, body)
	}
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	action := params.Get("Action")
	resp, aerr := s.dispatch(action, params)
	status := http.StatusOK
	if aerr != nil {
		status = aerr.status
	}
	s.requests = append(s.requests, Request{Action: action, Params: params, Region: region, Status: status})
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	out, err := xml.Marshal(resp)
	if err != nil {
		panic("ec2fake: encoding an answer: " + err.Error())
	}
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(out)
}

// readForm checks the request is a query API POST and returns its form.
func readForm(r *http.Request) (url.Values, []byte, *apiError) {
	if r.Method != http.MethodPost || r.URL.Path != "/" || r.URL.RawQuery != "" {
		return nil, nil, fail(http.StatusBadRequest, "InvalidRequest", "ec2fake accepts only POST / with a form body, not %s %s", r.Method, r.URL)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, nil, fail(http.StatusBadRequest, "InvalidRequest", "Content-Type %q is not application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, nil, fail(http.StatusBadRequest, "InvalidRequest", "reading the body: %v", err)
	}
	params, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, nil, fail(http.StatusBadRequest, "InvalidRequest", "parsing the form: %v", err)
	}
	if v := params.Get("Version"); v != apiVersion {
		return nil, nil, fail(http.StatusBadRequest, "NoSuchVersion", "An invalid version %q was specified (ec2fake speaks %s).", v, apiVersion)
	}
	for k, vs := range params {
		if len(vs) != 1 {
			return nil, nil, badParam("The parameter %s is given %d times.", k, len(vs))
		}
	}
	return params, body, nil
}

var authRE = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$`)

// authenticate checks the SigV4 Authorization header and returns the
// region of its scope.
func (s *Server) authenticate(r *http.Request, body []byte) (string, *apiError) {
	m := authRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return "", fail(http.StatusUnauthorized, "AuthFailure", "The request has no valid AWS4-HMAC-SHA256 Authorization header.")
	}
	akid, date, region, service, signed, sig := m[1], m[2], m[3], m[4], m[5], m[6]
	amzDate := r.Header.Get("X-Amz-Date")
	switch {
	case akid != s.AccessKeyID:
		return "", fail(http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials")
	case r.Header.Get("X-Amz-Security-Token") != "":
		return "", fail(http.StatusUnauthorized, "AuthFailure", "The security token included in the request is invalid (the fake's credentials have none).")
	case service != "ec2":
		return "", fail(http.StatusUnauthorized, "AuthFailure", "Credential should be scoped to correct service: 'ec2', not %q.", service)
	case len(amzDate) != 16 || amzDate[:8] != date:
		return "", fail(http.StatusUnauthorized, "AuthFailure", "X-Amz-Date %q does not match the credential scope date %s.", amzDate, date)
	}
	headers := strings.Split(signed, ";")
	if !slices.Contains(headers, "host") || !slices.Contains(headers, "x-amz-date") {
		return "", fail(http.StatusUnauthorized, "AuthFailure", "SignedHeaders %q lacks host or x-amz-date.", signed)
	}
	var canon strings.Builder
	for _, h := range headers {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			var vals []string
			for _, x := range r.Header.Values(h) {
				vals = append(vals, strings.Join(strings.Fields(x), " "))
			}
			v = strings.Join(vals, ",")
		}
		canon.WriteString(h + ":" + v + "\n")
	}
	payload := sha256.Sum256(body)
	creq := strings.Join([]string{r.Method, "/", "", canon.String(), signed, hex.EncodeToString(payload[:])}, "\n")
	creqHash := sha256.Sum256([]byte(creq))
	scope := date + "/" + region + "/" + service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(creqHash[:])
	key := []byte("AWS4" + s.SecretAccessKey)
	for _, part := range []string{date, region, service, "aws4_request"} {
		key = hmacSHA256(key, part)
	}
	if !hmac.Equal([]byte(hex.EncodeToString(hmacSHA256(key, toSign))), []byte(sig)) {
		return "", fail(http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
	}
	return region, nil
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// allowed lists, per action, the parameters the fake implements besides
// Action and Version.
var allowed = map[string]*regexp.Regexp{
	"DescribeSecurityGroups":     regexp.MustCompile(`^GroupId\.\d+$`),
	"DescribeInstances":          regexp.MustCompile(`^InstanceId\.\d+$`),
	"DescribeSecurityGroupRules": regexp.MustCompile(`^(Filter\.\d+\.(Name|Value\.\d+)|SecurityGroupRuleId\.\d+|MaxResults|NextToken)$`),
	"AuthorizeSecurityGroupIngress": regexp.MustCompile(
		`^(DryRun|GroupId|IpPermissions\.\d+\.(IpProtocol|FromPort|ToPort|IpRanges\.\d+\.(CidrIp|Description)|Ipv6Ranges\.\d+\.(CidrIpv6|Description)))$`),
	// IpPermissions only with DryRun (checked in dispatch).
	"RevokeSecurityGroupIngress": regexp.MustCompile(
		`^(DryRun|GroupId|SecurityGroupRuleId\.\d+|IpPermissions\.\d+\.(IpProtocol|FromPort|ToPort|IpRanges\.\d+\.CidrIp|Ipv6Ranges\.\d+\.CidrIpv6))$`),
}

// dispatch runs one call with s.mu held.
func (s *Server) dispatch(action string, p url.Values) (*response, *apiError) {
	re, ok := allowed[action]
	if !ok {
		return nil, fail(http.StatusBadRequest, "InvalidAction", "The action %q is not valid for this web service (ec2fake implements only what Detour uses).", action)
	}
	for k := range p {
		if k != "Action" && k != "Version" && !re.MatchString(k) {
			return nil, fail(http.StatusBadRequest, "UnknownParameter", "The parameter %s is not recognized (by ec2fake for %s).", k, action)
		}
	}
	if fs := s.fails[action]; len(fs) > 0 {
		f := fs[0]
		if f.left--; f.left <= 0 {
			s.fails[action] = fs[1:]
		}
		msg := "Injected failure."
		switch f.code {
		case "UnauthorizedOperation":
			msg = "You are not authorized to perform this operation."
		case "RequestLimitExceeded":
			msg = "Request limit exceeded."
		}
		return nil, &apiError{status: f.status, code: f.code, message: msg, retryAfter: f.retryAfter}
	}
	if p.Get("DryRun") == "true" {
		// The permission is granted (an UnauthorizedOperation is injected
		// with Fail); AWS then answers with this error, changing nothing.
		return nil, fail(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	switch action {
	case "DescribeSecurityGroups":
		return s.describeGroups(p)
	case "DescribeInstances":
		return s.describeInstances(p)
	case "DescribeSecurityGroupRules":
		return s.describeRules(p)
	case "AuthorizeSecurityGroupIngress":
		return s.authorize(p)
	default:
		return s.revoke(p)
	}
}

// list returns the values of prefix.1, prefix.2, ... in index order.
func list(p url.Values, prefix string) []string {
	type iv struct {
		i int
		v string
	}
	var got []iv
	for k, vs := range p {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		if i, err := strconv.Atoi(rest); err == nil {
			got = append(got, iv{i, vs[0]})
		}
	}
	slices.SortFunc(got, func(a, b iv) int { return a.i - b.i })
	out := make([]string, len(got))
	for i, g := range got {
		out[i] = g.v
	}
	return out
}

// indices returns the distinct N of keys prefix.N.*, sorted.
func indices(p url.Values, prefix string) []int {
	var out []int
	for k := range p {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) group(id string) *apiError {
	if !strings.HasPrefix(id, "sg-") {
		return fail(http.StatusBadRequest, "InvalidGroupId.Malformed", "Invalid id: %q (expecting \"sg-...\")", id)
	}
	if _, ok := s.groups[id]; !ok {
		return fail(http.StatusBadRequest, "InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	}
	return nil
}

func (s *Server) describeGroups(p url.Values) (*response, *apiError) {
	ids := list(p, "GroupId")
	if len(ids) == 0 {
		for id := range s.groups {
			ids = append(ids, id)
		}
		slices.Sort(ids)
	}
	resp := s.newResponse("DescribeSecurityGroups")
	for _, id := range ids {
		if err := s.group(id); err != nil {
			return nil, err
		}
		resp.Groups = append(resp.Groups, xmlGroup{OwnerID: ownerID, GroupID: id, GroupName: s.groups[id],
			Description: "group " + s.groups[id], VpcID: "vpc-0fa4e0000000000a1"})
	}
	return resp, nil
}

func (s *Server) describeInstances(p url.Values) (*response, *apiError) {
	ids := list(p, "InstanceId")
	resp := s.newResponse("DescribeInstances")
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") {
			return nil, fail(http.StatusBadRequest, "InvalidInstanceID.Malformed", "Invalid id: %q", id)
		}
		groups, ok := s.instances[id]
		if !ok {
			return nil, fail(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
		inst := xmlInstance{InstanceID: id}
		for _, g := range groups {
			inst.Groups = append(inst.Groups, xmlGroupRef{GroupID: g, GroupName: s.groups[g]})
		}
		resp.Reservations = append(resp.Reservations, xmlReservation{ReservationID: "r-" + strings.TrimPrefix(id, "i-"), OwnerID: ownerID, Instances: []xmlInstance{inst}})
	}
	return resp, nil
}

func (s *Server) describeRules(p url.Values) (*response, *apiError) {
	defer s.tick() // failed calls count too
	var groupIDs, ruleFilter []string
	var byGroup, byRule bool
	for _, i := range indices(p, "Filter") {
		prefix := "Filter." + strconv.Itoa(i)
		values := list(p, prefix+".Value")
		switch name := p.Get(prefix + ".Name"); name {
		case "group-id":
			for _, v := range values {
				if !strings.HasPrefix(v, "sg-") {
					return nil, fail(http.StatusBadRequest, "InvalidGroupId.Malformed", "The security group ID '%s' is malformed", v)
				}
			}
			byGroup, groupIDs = true, values
		case "security-group-rule-id":
			byRule, ruleFilter = true, values
		default:
			return nil, badParam("The filter '%s' is invalid (ec2fake implements group-id and security-group-rule-id).", name)
		}
	}
	ids := list(p, "SecurityGroupRuleId")
	for _, id := range ids {
		if !slices.ContainsFunc(s.rules, func(r *rule) bool { return r.ID == id && r.visible() }) {
			return nil, fail(http.StatusBadRequest, "InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
		}
	}
	limit := 1000
	if v := p.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 1000 {
			return nil, badParam("Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", v)
		}
		limit = n
	}
	var match []*rule
	for _, r := range s.rules {
		if r.visible() && (!byGroup || slices.Contains(groupIDs, r.group)) &&
			(!byRule || slices.Contains(ruleFilter, r.ID)) && (len(ids) == 0 || slices.Contains(ids, r.ID)) {
			match = append(match, r)
		}
	}
	start := 0
	if tok := p.Get("NextToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "fake-page-"))
		if err != nil || !strings.HasPrefix(tok, "fake-page-") || n > len(match) {
			return nil, badParam("The token '%s' is invalid.", tok)
		}
		start = n
	}
	resp := s.newResponse("DescribeSecurityGroupRules")
	end := min(start+limit, len(match))
	for _, r := range match[start:end] {
		resp.Rules = append(resp.Rules, toXML(r))
	}
	if end < len(match) {
		resp.NextToken = "fake-page-" + strconv.Itoa(end)
	}
	return resp, nil
}

// tick counts one DescribeSecurityGroupRules call against every pending
// change.
func (s *Server) tick() {
	kept := s.rules[:0]
	for _, r := range s.rules {
		if r.hidden > 0 {
			r.hidden--
		}
		if r.revoked {
			if r.lingering--; r.lingering <= 0 {
				continue
			}
		}
		kept = append(kept, r)
	}
	clear(s.rules[len(kept):])
	s.rules = kept
}

// descRE is the character set AWS allows in rule descriptions.
var descRE = regexp.MustCompile(`^[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{0,255}$`)

func (s *Server) authorize(p url.Values) (*response, *apiError) {
	gid := p.Get("GroupId")
	if gid == "" {
		return nil, fail(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter GroupId (ec2fake does not implement GroupName).")
	}
	if err := s.group(gid); err != nil {
		return nil, err
	}
	perms := indices(p, "IpPermissions")
	if len(perms) == 0 {
		return nil, fail(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter ipPermissions")
	}
	var added []*rule
	for _, i := range perms {
		prefix := "IpPermissions." + strconv.Itoa(i) + "."
		proto := p.Get(prefix + "IpProtocol")
		from, to := -1, -1
		switch proto {
		case "tcp", "udp", "6", "17":
			// AWS stores protocol numbers by name.
			if proto == "6" {
				proto = "tcp"
			} else if proto == "17" {
				proto = "udp"
			}
			var err1, err2 error
			from, err1 = strconv.Atoi(p.Get(prefix + "FromPort"))
			to, err2 = strconv.Atoi(p.Get(prefix + "ToPort"))
			if err1 != nil || err2 != nil || from < 0 || to > 65535 || from > to {
				return nil, badParam("Invalid value for portRange. Must specify both from and to ports with TCP/UDP (0-65535, from <= to).")
			}
		case "-1":
		case "":
			return nil, fail(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter %sIpProtocol", prefix)
		default:
			return nil, badParam("Invalid value '%s' for IP protocol. Unknown protocol (ec2fake implements tcp, udp and -1).", proto)
		}
		type source struct{ cidr, desc string }
		var sources []source
		for _, fam := range []struct {
			list, key string
			v6        bool
		}{{"IpRanges", "CidrIp", false}, {"Ipv6Ranges", "CidrIpv6", true}} {
			for _, j := range indices(p, prefix+fam.list) {
				rp := prefix + fam.list + "." + strconv.Itoa(j) + "."
				cidr := p.Get(rp + fam.key)
				pfx, err := netip.ParsePrefix(cidr)
				if err != nil || pfx.Addr().Is6() != fam.v6 || pfx.Masked() != pfx {
					return nil, badParam("CIDR block %s is malformed", cidr)
				}
				desc := p.Get(rp + "Description")
				if !descRE.MatchString(desc) {
					return nil, badParam("Invalid rule description. Valid descriptions are strings less than 256 characters from the following set:  a-zA-Z0-9. _-:/()#,@[]+=&;{}!$*")
				}
				sources = append(sources, source{cidr, desc})
			}
		}
		if len(sources) == 0 {
			return nil, fail(http.StatusBadRequest, "MissingParameter", "%s has no IpRanges or Ipv6Ranges (ec2fake implements no other source).", strings.TrimSuffix(prefix, "."))
		}
		for _, src := range sources {
			r := &rule{Rule: Rule{Protocol: proto, FromPort: from, ToPort: to, CIDR: src.cidr, Description: src.desc}, group: gid}
			same := func(o *rule) bool {
				return o.group == gid && !o.egress && !o.revoked && o.Protocol == r.Protocol &&
					o.FromPort == r.FromPort && o.ToPort == r.ToPort && o.CIDR == r.CIDR
			}
			if slices.ContainsFunc(s.rules, same) || slices.ContainsFunc(added, same) {
				return nil, fail(http.StatusBadRequest, "InvalidPermission.Duplicate",
					"the specified rule \"peer: %s, %s, from port: %d, to port: %d, ALLOW\" already exists", r.CIDR, strings.ToUpper(proto), from, to)
			}
			added = append(added, r)
		}
	}
	resp := s.newResponse("AuthorizeSecurityGroupIngress")
	resp.Return = true
	for _, r := range added {
		r.ID, r.hidden = s.newRuleID(), s.delay
		s.rules = append(s.rules, r)
		resp.Rules = append(resp.Rules, toXML(r))
	}
	return resp, nil
}

func (s *Server) revoke(p url.Values) (*response, *apiError) {
	gid := p.Get("GroupId")
	if gid == "" {
		return nil, fail(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter GroupId (ec2fake does not implement GroupName).")
	}
	if err := s.group(gid); err != nil {
		return nil, err
	}
	ids := list(p, "SecurityGroupRuleId")
	if len(ids) == 0 {
		return nil, fail(http.StatusBadRequest, "MissingParameter", "The request must contain SecurityGroupRuleId.N (ec2fake does not implement IpPermissions for Revoke).")
	}
	var gone []*rule
	for _, id := range ids {
		i := slices.IndexFunc(s.rules, func(r *rule) bool { return r.ID == id && r.group == gid && !r.egress && !r.revoked })
		if i < 0 {
			return nil, fail(http.StatusBadRequest, "InvalidSecurityGroupRuleId.NotFound",
				"The security group rule ID '%s' does not exist in security group '%s'", id, gid)
		}
		gone = append(gone, s.rules[i])
	}
	resp := s.newResponse("RevokeSecurityGroupIngress")
	resp.Return = true
	for _, r := range gone {
		resp.Revoked = append(resp.Revoked, toXML(r))
		if r.hidden > 0 {
			// Never shown: it stays unseen.
			r.revoked, r.lingering = true, 0
		} else {
			r.revoked, r.lingering = true, s.delay
		}
	}
	s.rules = slices.DeleteFunc(s.rules, func(r *rule) bool { return r.revoked && r.lingering <= 0 })
	return resp, nil
}
