package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/detour-acme/detour/internal/renew"
)

// liveProgress reports whether `detour issue` shows its steps as lines on
// the terminal: stderr is a terminal and the logs are text. Then the
// steps replace the informational logs: unless --log-level was given, only
// warnings and errors are still logged. Elsewhere (a pipe, a file, the
// journal, --log-format json) the logs stay as they are.
func (a *app) liveProgress(cmd *cobra.Command) bool {
	if !strings.EqualFold(a.logFormat, "text") || !isTerminal(a.stderr) {
		return false
	}
	if !cmd.Flags().Changed(flagLogLevel) {
		a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return true
}

// isTerminal reports whether w is a terminal (what golang.org/x/term's
// IsTerminal asks on Linux: whether the terminal settings can be read).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressLines writes one line per step of an issuance, with the time
// since start:
//
//	0.04s  order       example.com, www.example.com (profile shortlived)
//	0.05s  authz       example.com: path web (http-01), the preferred path; its check passed
type progressLines struct {
	w     io.Writer
	start time.Time
}

// showProgress returns the progress display of certificate name's
// issuance, begun at start; with header (several certificates in one run)
// a line naming it comes first.
func showProgress(w io.Writer, name string, header bool, start time.Time) func(renew.Event) {
	if header {
		fmt.Fprintln(w, name)
	}
	return (&progressLines{w: w, start: start}).event
}

// event writes e's line. renew delivers events one at a time.
func (p *progressLines) event(e renew.Event) {
	fmt.Fprintf(p.w, "%7.2fs  %-10s  %s\n", e.At.Sub(p.start).Seconds(), e.Kind, oneLine(describe(e)))
}

// describe says what e reports, for a person watching.
func describe(e renew.Event) string {
	id := e.Identifier + ": "
	path := "path " + e.Path
	switch e.Kind {
	case renew.EventAccount:
		if e.Registered {
			return e.URL + " (registered now)"
		}
		return e.URL + " (existing)"
	case renew.EventProbe:
		if e.Err != nil {
			return id + path + " failed a probe of Detour's own, fetched the way the CA will: " + e.Err.Error()
		}
		return id + path + " answered a probe of Detour's own, fetched the way the CA will"
	case renew.EventOrder:
		s := names(e.Identifiers)
		if e.Profile != "" {
			s += " (profile " + e.Profile + ")"
		}
		return s
	case renew.EventAuthz:
		switch {
		case e.Path == "":
			return id + e.Reason
		case e.Err != nil:
			return id + path + " could not put the answer in place: " + e.Err.Error()
		}
		s := fmt.Sprintf("%s%s (%s), %s", id, path, e.Challenge, e.Reason)
		for i, sk := range e.Skipped {
			sep := "; "
			if i == 0 {
				sep = "; passed over: "
			}
			s += sep + sk.Path + ": " + passedOver(sk)
		}
		return s
	case renew.EventSelfCheck:
		if e.Err != nil {
			return id + path + " failed the self-check (the CA was not asked): " + e.Err.Error()
		}
		return id + path + " answers as the CA will fetch it"
	case renew.EventWait:
		if e.Err != nil {
			return id + path + ": the record is not in place: " + e.Err.Error()
		}
		return id + path + ": the record is in place"
	case renew.EventValidation:
		if e.Err != nil {
			return fmt.Sprintf("%sfailed after %s: %v", id, count(e.Polls, "poll"), e.Err)
		}
		return fmt.Sprintf("%svalid after %s", id, count(e.Polls, "poll"))
	case renew.EventFinalize:
		return fmt.Sprintf("certificate issued, serial %s, valid until %s", e.Serial, e.NotAfter.UTC().Format(time.RFC3339))
	case renew.EventStored:
		s := fmt.Sprintf("version %d (%s)", e.Version, e.LiveDir)
		if e.Detail != "" {
			s += ", " + e.Detail
		}
		return s
	case renew.EventDeployed:
		var done []string
		if e.Outputs > 0 {
			done = append(done, count(e.Outputs, "output")+" written")
		}
		if e.Reloads > 0 {
			done = append(done, count(e.Reloads, "server")+" reloaded")
		}
		if e.Hook != "" {
			done = append(done, "hook `"+e.Hook+"`")
		}
		s := strings.Join(done, ", ")
		if e.Err != nil {
			return s + " failed (the new certificate is live): " + e.Err.Error()
		}
		return s + " ok"
	}
	s := strings.TrimSpace(e.Identifier + " " + e.Path)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// passedOver says why a path was passed over; briefly when a line above
// said so already.
func passedOver(s renew.Skipped) string {
	switch s.Kind {
	case renew.EventProbe:
		return "its probe failed (above)"
	case renew.EventSelfCheck:
		return "its self-check failed (above)"
	case renew.EventAuthz:
		return "its answer could not be put in place (above)"
	}
	return s.Reason
}

// names lists identifiers, the first three of them and how many more.
func names(ids []string) string {
	if len(ids) > 3 {
		return fmt.Sprintf("%s and %d more", strings.Join(ids[:3], ", "), len(ids)-3)
	}
	return strings.Join(ids, ", ")
}

// count says "1 poll", "2 polls".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// oneLine folds s, which may hold an error of several lines, into one.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
