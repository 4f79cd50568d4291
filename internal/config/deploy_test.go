package config

import (
	"strings"
	"testing"
	"time"
)

func TestDeployAndAgentKeys(t *testing.T) {
	doc := `metrics_listen = "127.0.0.1:9464"
notify_webhook = "https://hooks.example.com/detour"
notify_days = 3

[ca.zerossl]
eab_kid = "kid"
eab_hmac_key = "aGVsbG8"

[[certificate]]
domains = ["example.com"]
fallback_ca = ["zerossl"]
deploy_hook = "true"
deploy_hook_timeout = "90s"
reload = ["nginx", { server = "haproxy", pid_file = "/run/haproxy.pid" }]

[[certificate.output]]
path = "/etc/haproxy/certs/example.pem"
format = "combined"
owner = "haproxy"
group = "haproxy"
mode = "0640"

[[certificate.output]]
path = "/etc/java/example.p12"
format = "pkcs12"
password_file = "/etc/java/p12.pass"
`
	cfg, err := Parse(testFile, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Agent; a.MetricsListen != "127.0.0.1:9464" || a.NotifyDays != 3 || a.NotifyWebhook == "" {
		t.Errorf("agent = %+v", a)
	}
	c := cfg.Certificates[0]
	if len(c.FallbackCA) != 1 || c.FallbackCA[0] != "zerossl" || c.AfterFailures != DefaultAfterFailures {
		t.Errorf("fallback = %v after %d", c.FallbackCA, c.AfterFailures)
	}
	d := c.Deploy
	if d.HookTimeout != 90*time.Second {
		t.Errorf("hook timeout = %v", d.HookTimeout)
	}
	if len(d.Reloads) != 2 || d.Reloads[0].Server != "nginx" || d.Reloads[1].PIDFile != "/run/haproxy.pid" {
		t.Errorf("reloads = %+v", d.Reloads)
	}
	if len(d.Outputs) != 2 || d.Outputs[0].Mode != 0o640 || d.Outputs[0].Owner != "haproxy" || d.Outputs[1].Format != FormatPKCS12 || d.Outputs[0].Line != 16 {
		t.Errorf("outputs = %+v", d.Outputs)
	}
	if def, err := Parse(testFile, []byte("[[certificate]]\ndomains = [\"a.example\"]\n")); err != nil || def.Agent.NotifyDays != DefaultNotifyDays {
		t.Errorf("default notify_days: %+v, %v", def, err)
	}
}

func TestDeployAndAgentErrors(t *testing.T) {
	cert := "[[certificate]]\ndomains = [\"example.com\"]\n"
	tests := []struct {
		name string
		doc  string
		line int
		key  string
		want string
	}{
		{"unknown reload server", cert + "reload = [\"ngnix\"]\n", 3, "certificate[0].reload[0]", `did you mean "nginx"?`},
		{"reload as a string", cert + "reload = \"nginx\"\n", 3, "certificate[0].reload", `reload = ["nginx"]`},
		{"unit and pid file", cert + "reload = [{ server = \"nginx\", unit = \"nginx\", pid_file = \"/run/nginx.pid\" }]\n", 3, "certificate[0].reload[0]", "not both"},
		{"relative pid file", cert + "reload = [{ server = \"nginx\", pid_file = \"nginx.pid\" }]\n", 3, "certificate[0].reload[0].pid_file", "absolute"},
		{"output without path", cert + "[[certificate.output]]\nformat = \"combined\"\n", 3, "certificate[0].output[0]", "path is missing"},
		{"output bad format", cert + "[[certificate.output]]\npath = \"/x.pem\"\nformat = \"pem\"\n", 5, "certificate[0].output[0].format", "use one of"},
		{"output bad mode", cert + "[[certificate.output]]\npath = \"/x.pem\"\nformat = \"cert\"\nmode = \"rw\"\n", 6, "certificate[0].output[0].mode", `mode = "0640"`},
		{"password for PEM", cert + "[[certificate.output]]\npath = \"/x.pem\"\nformat = \"cert\"\npassword_file = \"/p\"\n", 6, "certificate[0].output[0].password_file", "pkcs12"},
		{"same output twice", cert + "[[certificate.output]]\npath = \"/x.pem\"\nformat = \"cert\"\n[[certificate.output]]\npath = \"/x.pem\"\nformat = \"chain\"\n", 6, "certificate[0].output[1]", "own path"},
		{"bad timeout", cert + "deploy_hook = \"true\"\ndeploy_hook_timeout = \"soon\"\n", 4, "certificate[0].deploy_hook_timeout", "positive duration"},
		{"timeout without hook", cert + "deploy_hook_timeout = \"1m\"\n", 3, "certificate[0].deploy_hook_timeout", "needs deploy_hook"},
		{"unknown fallback", cert + "fallback_ca = [\"nosuchca\"]\n", 3, "certificate[0].fallback_ca[0]", "nosuchca"},
		{"fallback needs EAB", cert + "fallback_ca = [\"zerossl\"]\n", 3, "certificate[0].fallback_ca[0]", "External Account Binding"},
		{"fallback is the CA", cert + "fallback_ca = [\"letsencrypt\"]\n", 3, "certificate[0].fallback_ca[0]", "already the certificate's CA"},
		{"after_failures without fallback", cert + "after_failures = 2\n", 3, "certificate[0].after_failures", "needs fallback_ca"},
		{"after_failures zero", cert + "fallback_ca = [\"buypass\"]\nafter_failures = 0\n", 4, "certificate[0].after_failures", "1 or more"},
		{"metrics not host:port", "metrics_listen = \"9464\"\n", 1, "metrics_listen", `"127.0.0.1:9464"`},
		{"webhook not a URL", "notify_webhook = \"hooks.example.com\"\n", 1, "notify_webhook", "http(s) URL"},
		{"notify_days alone", "notify_days = 5\n", 1, "notify_days", "needs notify_command"},
		{"notify_days quoted", "notify_command = \"true\"\nnotify_days = \"5\"\n", 2, "notify_days", "integer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(tc.doc))
			if err == nil {
				t.Fatal("no error")
			}
			e := findError(err, tc.line, tc.key)
			if e == nil {
				t.Fatalf("no error at line %d key %q; got:\n%v", tc.line, tc.key, err)
			}
			if !strings.Contains(e.Msg, tc.want) {
				t.Errorf("message %q does not contain %q", e.Msg, tc.want)
			}
		})
	}
}
