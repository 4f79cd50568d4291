package doctor

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/testenv"
)

const benchNginx = `{{.User}}
worker_processes 1;
error_log {{.Dir}}/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    server {
        listen 127.0.0.1:{{.HTTP}};
        server_name bench.detour.test;
        root {{.Root}};
    }
}
`

// BenchmarkDoctorNginx is one whole doctor run for one name on a host
// where a real nginx serves the name's document root on the port the CA
// validates on: the CA's directory, /proc, `nginx -T`, the firewall, every
// DNS check against the sandbox's authoritative server, and the webroot
// probe. BENCHMARKS.md asks for "well under 5 s".
func BenchmarkDoctorNginx(b *testing.B) {
	env := testenv.New(b, testenv.Options{KeepPorts: true})
	env.AddName("bench.detour.test")
	dir := testenv.WorldReadableDir(b)
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(env.HTTPAddr)
	_, tlsPort, _ := net.SplitHostPort(env.TLSAddr)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	testenv.StartNginx(b, dir, benchNginx, map[string]any{"User": user, "HTTP": port, "Root": root}, env.HTTPAddr)
	roots, err := os.ReadFile(env.RootsFile)
	if err != nil {
		b.Fatal(err)
	}
	ca, err := acme.New(acme.Options{Directory: env.CA.DirectoryURL(), RootsPEM: roots})
	if err != nil {
		b.Fatal(err)
	}
	hp, _ := strconv.Atoi(port)
	tp, _ := strconv.Atoi(tlsPort)
	_, dnsPort, _ := net.SplitHostPort(env.DNSAddr)
	np, _ := strconv.Atoi(dnsPort)
	opts := Options{Names: []string{"bench.detour.test"}, HTTPPort: hp, TLSPort: tp, Resolver: env.DNSAddr, NSPort: np, CA: ca}
	b.ResetTimer()
	for b.Loop() {
		rep := Run(b.Context(), opts)
		if best, ok := Best(rep.Names[0].Paths); !ok || best.Kind != "webroot" || best.Verdict != Works {
			b.Fatalf("best path = %+v", rep.Names[0].Paths[0])
		}
	}
}
