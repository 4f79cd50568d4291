// Package awssg is the "aws-sg" cloud firewall provider: it opens
// Detour's firewall windows in an AWS EC2 security group, through the EC2
// API of aws-sdk-go-v2.
//
// A window is one ingress rule of the security group (AWS: "Control
// traffic to your AWS resources using security groups", and the EC2 API
// reference for AuthorizeSecurityGroupIngress,
// RevokeSecurityGroupIngress and DescribeSecurityGroupRules): TCP on the
// validation port from 0.0.0.0/0 or ::/0, with Detour's mark in its
// description. Security groups only allow, and an instance gets the union
// of the rules of all its groups, so adding the rule to one of them is
// enough. A rule is removed by its security group rule ID (sgr-...), so
// the user's own rules, even identical ones, are never touched.
//
// EC2 is eventually consistent: a rule just added may be missing from
// DescribeSecurityGroupRules for a while, and one just revoked may still
// be listed. Add and Remove poll until the change shows.
//
// Credentials come from the shared credentials file named in
// cloud.Config.Credentials (its profile cloud.Config.Profile, "default"
// when empty) or, without one, from the SDK's default chain: environment,
// ~/.aws, container or instance role. The SDK reads the process
// environment itself; cloud.Config.Getenv is not used.
package awssg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/detour-acme/detour/internal/firewall/cloud"
)

// Name is the provider's configuration name: firewall = "aws-sg".
const Name = "aws-sg"

const (
	// httpTimeout bounds one API request when Config.HTTPClient is nil.
	httpTimeout = 30 * time.Second
	// waitLimit bounds the wait for a change to show, whatever ctx says.
	waitLimit = 5 * time.Minute
	// cleanupTimeout bounds the removal of a rule whose wait failed.
	cleanupTimeout = 30 * time.Second
	// pageSize is the MaxResults of DescribeSecurityGroupRules.
	pageSize = 1000
)

// EC2 error codes the provider acts on.
const (
	codeDuplicate    = "InvalidPermission.Duplicate"
	codeRuleNotFound = "InvalidSecurityGroupRuleId.NotFound"
)

// The IAM actions of the calls, named in ErrForbidden messages.
const (
	actDescribeRules  = "ec2:DescribeSecurityGroupRules"
	actAuthorize      = "ec2:AuthorizeSecurityGroupIngress"
	actRevoke         = "ec2:RevokeSecurityGroupIngress"
	actDescribeGroups = "ec2:DescribeSecurityGroups"
	actDescribeInst   = "ec2:DescribeInstances"
)

// API is an AWS security group as a cloud firewall. It is safe for
// concurrent use.
type API struct {
	client     *ec2.Client
	log        *slog.Logger
	poll       time.Duration
	firewallID string
	instance   string
	pageSize   int32

	mu     sync.Mutex
	target *cloud.Target // resolved once
}

var _ cloud.API = (*API)(nil)

// New returns the security group cfg names, by cfg.FirewallID (sg-...) or,
// when that is empty, by the instance cfg.Instance (i-...). It checks the
// configuration and loads the AWS configuration; it calls no API (the
// credentials chain aside, which may read files).
//
// With cfg.Credentials, the credentials are the profile's in that file
// only: the environment's AWS_ACCESS_KEY_ID and AWS_PROFILE are ignored,
// and the instance metadata service (IMDS) is turned off, so that a
// profile without keys fails instead of falling back to an instance role.
// Without it, the SDK's default chain applies, an instance role included.
func New(ctx context.Context, cfg cloud.Config) (*API, error) {
	switch {
	case cfg.FirewallID != "":
		if !strings.HasPrefix(cfg.FirewallID, "sg-") {
			return nil, fmt.Errorf("%s: firewall_id %q is not a security group ID (sg-...)", Name, cfg.FirewallID)
		}
	case cfg.Instance != "":
		if !strings.HasPrefix(cfg.Instance, "i-") {
			return nil, fmt.Errorf("%s: firewall_instance %q is not an EC2 instance ID (i-...)", Name, cfg.Instance)
		}
	default:
		return nil, fmt.Errorf("%s: set firewall_id to the security group (sg-...) or firewall_instance to this EC2 instance (i-...)", Name)
	}

	opts := []func(*config.LoadOptions) error{
		// cloud.Retry is the one place that retries.
		config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if cfg.HTTPClient == nil {
		// The SDK's own client, so that AWS_CA_BUNDLE applies to it.
		opts = append(opts, config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(httpTimeout)))
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Credentials != "" {
		profile := cmp.Or(cfg.Profile, "default")
		if err := checkProfile(ctx, cfg.Credentials, profile); err != nil {
			return nil, fmt.Errorf("%s: %w", Name, err)
		}
		opts = append(opts,
			config.WithSharedCredentialsFiles([]string{cfg.Credentials}),
			config.WithSharedConfigProfile(profile),
			config.WithEC2IMDSClientEnableState(imds.ClientDisabled))
	} else if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: loading the AWS configuration: %w", Name, err)
	}
	if awsCfg.Region == "" {
		return nil, fmt.Errorf("%s: no AWS region: set firewall_region (or AWS_REGION, or region in the AWS profile)", Name)
	}
	if cfg.HTTPClient != nil {
		// Set after loading: given a client that is not its own, the SDK
		// refuses to load when AWS_CA_BUNDLE is set. The caller's client
		// decides which CAs it trusts. Credential providers built while
		// loading (IMDS, STS) keep the SDK's client.
		awsCfg.HTTPClient = cfg.HTTPClient
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = markedCredentials{awsCfg.Credentials}
	}
	client := ec2.NewFromConfig(awsCfg, func(o *ec2.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.Retryer = aws.NopRetryer{}
		o.RetryMaxAttempts = 1
	})
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &API{client: client, log: log.With("provider", Name), poll: cfg.Poll(),
		firewallID: cfg.FirewallID, instance: cfg.Instance, pageSize: pageSize}, nil
}

// checkProfile makes sure the credentials file can be read and has the
// profile: the SDK would silently skip an unreadable file.
func checkProfile(ctx context.Context, file, profile string) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("reading firewall_credentials: %w", err)
	}
	f.Close()
	_, err = config.LoadSharedConfigProfile(ctx, profile, func(o *config.LoadSharedConfigOptions) {
		o.CredentialsFiles = []string{file}
		o.ConfigFiles = []string{}
	})
	if errors.As(err, new(config.SharedConfigProfileNotExistError)) {
		return fmt.Errorf("firewall_credentials %s has no profile [%s]: set firewall_profile", file, profile)
	}
	if err != nil {
		return fmt.Errorf("reading firewall_credentials: %w", err)
	}
	return nil
}

// markedCredentials marks the credential chain's failures, so that they
// are reported as refused credentials rather than as an unreachable API.
type markedCredentials struct{ aws.CredentialsProvider }

type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "getting AWS credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

func (m markedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return c, &credentialsError{err}
	}
	return c, nil
}

// Provider returns "aws-sg".
func (a *API) Provider() string { return Name }

// Target returns the security group: the one configured, checked to
// exist, or the lowest by ID of the instance's groups. It is resolved
// once; a failure is not remembered.
func (a *API) Target(ctx context.Context) (cloud.Target, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.target != nil {
		return *a.target, nil
	}
	var t cloud.Target
	var err error
	if a.firewallID != "" {
		t, err = a.lookUpGroup(ctx)
	} else {
		t, err = a.discover(ctx)
	}
	if err != nil {
		return cloud.Target{}, err
	}
	a.target = &t
	return t, nil
}

func (a *API) lookUpGroup(ctx context.Context) (cloud.Target, error) {
	op := "looking up security group " + a.firewallID
	var out *ec2.DescribeSecurityGroupsOutput
	err := a.call(ctx, op, actDescribeGroups, func(ctx context.Context) (err error) {
		out, err = a.client.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{a.firewallID}})
		return err
	})
	if err != nil {
		return cloud.Target{}, err
	}
	for _, g := range out.SecurityGroups {
		if aws.ToString(g.GroupId) == a.firewallID {
			return cloud.Target{ID: a.firewallID, Name: aws.ToString(g.GroupName)}, nil
		}
	}
	return cloud.Target{}, &cloud.Error{Provider: Name, Op: op, Kind: cloud.ErrNotFound, Message: "AWS did not return the group"}
}

func (a *API) discover(ctx context.Context) (cloud.Target, error) {
	op := "looking up the security groups of instance " + a.instance
	var out *ec2.DescribeInstancesOutput
	err := a.call(ctx, op, actDescribeInst, func(ctx context.Context) (err error) {
		out, err = a.client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{a.instance}})
		return err
	})
	if err != nil {
		return cloud.Target{}, err
	}
	var groups []types.GroupIdentifier
	for _, res := range out.Reservations {
		for _, inst := range res.Instances {
			if aws.ToString(inst.InstanceId) == a.instance {
				groups = append(groups, inst.SecurityGroups...)
			}
		}
	}
	if len(groups) == 0 {
		return cloud.Target{}, &cloud.Error{Provider: Name, Op: op, Kind: cloud.ErrNotFound,
			Message: "the instance has no security group; set firewall_id"}
	}
	slices.SortFunc(groups, func(x, y types.GroupIdentifier) int {
		return strings.Compare(aws.ToString(x.GroupId), aws.ToString(y.GroupId))
	})
	t := cloud.Target{ID: aws.ToString(groups[0].GroupId), Name: aws.ToString(groups[0].GroupName)}
	a.log.InfoContext(ctx, "security group found from the instance; its rules apply to the instance with those of its other groups",
		"instance", a.instance, "security_group", t.ID, "security_group_name", t.Name, "groups", len(groups))
	return t, nil
}

// Rules returns the group's ingress rules that accept TCP (or all
// traffic) from 0.0.0.0/0 or ::/0.
func (a *API) Rules(ctx context.Context) ([]cloud.Rule, error) {
	t, err := a.Target(ctx)
	if err != nil {
		return nil, err
	}
	op := "listing the rules of security group " + t.ID
	in := &ec2.DescribeSecurityGroupRulesInput{
		Filters:    []types.Filter{{Name: aws.String("group-id"), Values: []string{t.ID}}},
		MaxResults: aws.Int32(a.pageSize),
	}
	var rules []cloud.Rule
	for {
		var out *ec2.DescribeSecurityGroupRulesOutput
		err := a.call(ctx, op, actDescribeRules, func(ctx context.Context) (err error) {
			out, err = a.client.DescribeSecurityGroupRules(ctx, in)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range out.SecurityGroupRules {
			if cr, ok := toRule(r); ok {
				rules = append(rules, cr)
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return rules, nil
		}
		in.NextToken = out.NextToken
	}
}

// toRule returns r as a cloud.Rule if it is one a window cares about.
func toRule(r types.SecurityGroupRule) (cloud.Rule, bool) {
	if aws.ToBool(r.IsEgress) {
		return cloud.Rule{}, false
	}
	var from, to int
	switch aws.ToString(r.IpProtocol) {
	case "tcp", "6":
		// A TCP rule may start at port 0, which no connection uses; 1
		// keeps one form for "every port".
		from, to = max(int(aws.ToInt32(r.FromPort)), 1), int(aws.ToInt32(r.ToPort))
	case "-1":
		from, to = 1, 65535
	default:
		return cloud.Rule{}, false
	}
	var v6 bool
	switch {
	case aws.ToString(r.CidrIpv4) == "0.0.0.0/0":
	case aws.ToString(r.CidrIpv6) == "::/0":
		v6 = true
	default:
		return cloud.Rule{}, false
	}
	return cloud.Rule{FromPort: from, ToPort: to, IPv6: v6, Description: aws.ToString(r.Description),
		ID: aws.ToString(r.SecurityGroupRuleId)}, true
}

// Add adds r to the group and waits until DescribeSecurityGroupRules
// lists it. If the wait fails, the rule is removed again (under a
// context of its own) and, should that fail too, returned with its ID
// alongside the error.
func (a *API) Add(ctx context.Context, r cloud.Rule) (cloud.Rule, error) {
	if r.FromPort < 1 || r.ToPort > 65535 || r.FromPort > r.ToPort {
		return cloud.Rule{}, fmt.Errorf("%s: adding rule %v: invalid port range", Name, r)
	}
	t, err := a.Target(ctx)
	if err != nil {
		return cloud.Rule{}, err
	}
	perm := types.IpPermission{IpProtocol: aws.String("tcp"),
		FromPort: aws.Int32(int32(r.FromPort)), ToPort: aws.Int32(int32(r.ToPort))}
	var desc *string
	if r.Description != "" {
		desc = aws.String(r.Description)
	}
	if r.IPv6 {
		perm.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String("::/0"), Description: desc}}
	} else {
		perm.IpRanges = []types.IpRange{{CidrIp: aws.String("0.0.0.0/0"), Description: desc}}
	}
	op := fmt.Sprintf("adding rule %v to security group %s", r, t.ID)
	var out *ec2.AuthorizeSecurityGroupIngressOutput
	err = a.call(ctx, op, actAuthorize, func(ctx context.Context) (err error) {
		out, err = a.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
			GroupId: aws.String(t.ID), IpPermissions: []types.IpPermission{perm}})
		return err
	})
	if err != nil {
		return cloud.Rule{}, err
	}
	if len(out.SecurityGroupRules) == 0 || aws.ToString(out.SecurityGroupRules[0].SecurityGroupRuleId) == "" {
		return cloud.Rule{}, &cloud.Error{Provider: Name, Op: op, Kind: cloud.ErrRejected,
			Message: "AWS added the rule but returned no security group rule ID; remove it by hand"}
	}
	r.ID = aws.ToString(out.SecurityGroupRules[0].SecurityGroupRuleId)
	a.log.InfoContext(ctx, "added security group rule", "security_group", t.ID, "rule", r.String(), "rule_id", r.ID)

	if err := a.wait(ctx, t.ID, r.ID, true); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if rerr := a.revoke(cctx, t.ID, r); rerr != nil {
			return r, errors.Join(err, rerr)
		}
		a.log.InfoContext(ctx, "removed security group rule again", "security_group", t.ID, "rule", r.String(), "rule_id", r.ID)
		return cloud.Rule{}, err
	}
	return r, nil
}

// CheckWrite implements cloud.WriteChecker: Authorize and Revoke of r
// with DryRun, which AWS answers with DryRunOperation when the IAM policy
// allows the call and UnauthorizedOperation when it does not. Other
// answers say nothing about permission and are not errors.
func (a *API) CheckWrite(ctx context.Context, r cloud.Rule) error {
	t, err := a.Target(ctx)
	if err != nil {
		return err
	}
	perm := types.IpPermission{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(int32(r.FromPort)), ToPort: aws.Int32(int32(r.ToPort))}
	if r.IPv6 {
		perm.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String("::/0")}}
	} else {
		perm.IpRanges = []types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}
	}
	for _, c := range []struct {
		action string
		call   func(context.Context) error
	}{
		{actAuthorize, func(ctx context.Context) error {
			_, err := a.client.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
				DryRun: aws.Bool(true), GroupId: aws.String(t.ID), IpPermissions: []types.IpPermission{perm}})
			return err
		}},
		{actRevoke, func(ctx context.Context) error {
			_, err := a.client.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
				DryRun: aws.Bool(true), GroupId: aws.String(t.ID), IpPermissions: []types.IpPermission{perm}})
			return err
		}},
	} {
		op := fmt.Sprintf("checking with DryRun that the credentials may call %s on security group %s", c.action, t.ID)
		err := a.call(ctx, op, c.action, c.call)
		var ce *cloud.Error
		switch {
		case err == nil, errors.As(err, &ce) && ce.Code == "DryRunOperation":
		case errors.Is(err, cloud.ErrForbidden), errors.Is(err, cloud.ErrAuth):
			return err
		default:
			a.log.DebugContext(ctx, "the dry run says nothing about permission", "action", c.action, "error", err)
		}
	}
	return nil
}

// Remove revokes the rule r.ID and waits until DescribeSecurityGroupRules
// no longer lists it. A rule already gone is not an error.
func (a *API) Remove(ctx context.Context, r cloud.Rule) error {
	if r.ID == "" {
		return fmt.Errorf("%s: removing rule %v: the rule has no security group rule ID (sgr-...)", Name, r)
	}
	t, err := a.Target(ctx)
	if err != nil {
		return err
	}
	if err := a.revoke(ctx, t.ID, r); err != nil {
		if ce := (*cloud.Error)(nil); errors.As(err, &ce) && ce.Code == codeRuleNotFound {
			a.log.InfoContext(ctx, "security group rule already gone", "security_group", t.ID, "rule", r.String(), "rule_id", r.ID)
			return nil
		}
		return err
	}
	a.log.InfoContext(ctx, "removed security group rule", "security_group", t.ID, "rule", r.String(), "rule_id", r.ID)
	return a.wait(ctx, t.ID, r.ID, false)
}

func (a *API) revoke(ctx context.Context, group string, r cloud.Rule) error {
	op := fmt.Sprintf("removing rule %v from security group %s", r, group)
	return a.call(ctx, op, actRevoke, func(ctx context.Context) error {
		_, err := a.client.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{
			GroupId: aws.String(group), SecurityGroupRuleIds: []string{r.ID}})
		return err
	})
}

// wait polls DescribeSecurityGroupRules for rule id until it is listed
// (present) or not, ctx ends, or waitLimit passes.
func (a *API) wait(ctx context.Context, group, id string, present bool) error {
	what := "appear"
	if !present {
		what = "disappear"
	}
	op := fmt.Sprintf("waiting for rule %s to %s in security group %s", id, what, group)
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		var listed bool
		err := a.call(ctx, op, actDescribeRules, func(ctx context.Context) error {
			out, err := a.client.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{SecurityGroupRuleIds: []string{id}})
			if ae := smithy.APIError(nil); errors.As(err, &ae) && ae.ErrorCode() == codeRuleNotFound {
				return nil // not listed (yet, or any more)
			}
			if err != nil {
				return err
			}
			listed = slices.ContainsFunc(out.SecurityGroupRules, func(r types.SecurityGroupRule) bool {
				return aws.ToString(r.SecurityGroupRuleId) == id
			})
			return nil
		})
		if err != nil {
			return err
		}
		if listed == present {
			return nil
		}
		timer := time.NewTimer(a.poll)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%s: %s: %w", Name, op, context.Cause(ctx))
		case <-timer.C:
		}
	}
}

// call runs one API call through cloud.Retry, turning its failures into
// *cloud.Error. action is the IAM action the call needs.
func (a *API) call(ctx context.Context, op, action string, fn func(context.Context) error) error {
	return cloud.Retry(ctx, a.log, func(ctx context.Context) error {
		if err := fn(ctx); err != nil {
			return toError(ctx, op, action, err)
		}
		return nil
	})
}

// toError describes a failed SDK call as a *cloud.Error.
func toError(ctx context.Context, op, action string, err error) *cloud.Error {
	e := &cloud.Error{Provider: Name, Op: op, Err: err}
	var credErr *credentialsError
	if re := (*smithyhttp.ResponseError)(nil); errors.As(err, &re) && re.Response != nil && re.Response.Response != nil {
		e.Status = re.HTTPStatusCode()
		e.RetryAfter = cloud.ParseRetryAfter(re.Response.Header, time.Now())
	}
	if ae := smithy.APIError(nil); errors.As(err, &ae) {
		e.Code, e.Message = ae.ErrorCode(), ae.ErrorMessage()
	}
	switch e.Code {
	case "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch":
		e.Kind = cloud.ErrAuth
	case "UnauthorizedOperation":
		e.Kind = cloud.ErrForbidden
		e.Message = fmt.Sprintf("the credentials' IAM policy must allow %s (AWS: %s)", action, e.Message)
	case "InvalidGroup.NotFound", "InvalidGroupId.Malformed", "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed":
		e.Kind = cloud.ErrNotFound
	case "RequestLimitExceeded", "Throttling":
		e.Kind = cloud.ErrRateLimited
	case "InternalError", "Unavailable", "ServiceUnavailable":
		e.Kind = cloud.ErrUnavailable
	case codeDuplicate:
		e.Kind = cloud.ErrRejected
		e.Message = "an identical rule already exists in the security group (added meanwhile by someone else?): " + e.Message
	}
	switch {
	case e.Kind != nil:
	case e.Status >= 500:
		e.Kind = cloud.ErrUnavailable
	case e.Status != 0:
		if e.Kind = cloud.KindOfStatus(e.Status); e.Kind == nil {
			e.Kind = cloud.ErrUnavailable // a 2xx that could not be read
		}
	case ctx.Err() != nil:
		e.Kind = cloud.ErrUnavailable // Retry stops at once on a done ctx
	case errors.As(err, &credErr):
		e.Kind = cloud.ErrAuth
		e.Message = "no usable AWS credentials (check firewall_credentials and firewall_profile, or the instance's role): " + credErr.err.Error()
	default:
		e.Kind = cloud.ErrUnavailable // no response
	}
	return e
}
