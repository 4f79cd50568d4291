package webroot

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/detour-acme/detour/internal/solve"
)

// Kind is the kind of a webroot path.
const Kind = "webroot"

// Spec declares the webroot path kind.
var Spec = solve.Spec{
	Kind:       Kind,
	Summary:    "writes each http-01 token into the document root the running web server serves",
	For:        "a web server serves files on port 80 for the names: point root at its document root",
	Challenges: []string{solve.HTTP01},
	Settings: []solve.Setting{
		{Key: "root", Type: solve.TypePath, Required: true, Example: "/var/www/html",
			Doc: "the document root your web server serves on port 80 for these names (nginx root, Apache DocumentRoot)",
			Check: func(v string) error {
				if !filepath.IsAbs(v) {
					return fmt.Errorf("%q must be an absolute path: the directory your web server serves for these names", v)
				}
				return nil
			}},
	},
	Window: &solve.Window{},
	Build: func(_ context.Context, s solve.Settings, env solve.Env) (solve.Solver, error) {
		return solve.Built(New(Options{Logger: env.Logger, Root: s.Get("root")}))
	},
	Example: "docroot",
}
