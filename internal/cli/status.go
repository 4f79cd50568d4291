package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/store"
)

const flagJSON = "json"

// certStatus is one row of `detour status`.
type certStatus struct {
	Name        string     `json:"name"`
	Identifiers []string   `json:"identifiers"`
	CA          string     `json:"ca"`
	Version     int        `json:"version"`
	NotAfter    time.Time  `json:"not_after"`
	DaysLeft    float64    `json:"days_left"`
	RenewAt     time.Time  `json:"renew_at"`
	RenewReason string     `json:"renew_reason"`
	ARIStart    *time.Time `json:"ari_start,omitempty"`
	ARIEnd      *time.Time `json:"ari_end,omitempty"`
	LastOK      *bool      `json:"last_ok,omitempty"`
	LastTime    *time.Time `json:"last_time,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Paths       []string   `json:"paths"`
	Fullchain   string     `json:"fullchain"`
	Privkey     string     `json:"privkey"`
	// Source is "agent" when the running agent answered (its schedule,
	// next CA and failures are then filled in), else "store".
	Source   string `json:"source"`
	Running  bool   `json:"running,omitempty"`
	NextCA   string `json:"next_ca,omitempty"`
	Failures int    `json:"failures,omitempty"`
}

func (a *app) listCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List certificates: names, expiry, days left",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.status(cmd, nil, asJSON, false)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

func (a *app) statusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show each certificate's expiry, renewal window (ARI), next renewal and last result",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.status(cmd, args, asJSON, true)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

func (a *app) status(cmd *cobra.Command, names []string, asJSON, detail bool) error {
	cfg, err := a.config(false)
	if err != nil {
		return err
	}
	st, err := a.store(cfg)
	if err != nil {
		return err
	}
	recs, err := st.ListRecords(cmd.Context())
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	now := time.Now()
	rows := []certStatus{}
	for _, r := range recs {
		if len(want) > 0 && !want[r.Name] {
			continue
		}
		delete(want, r.Name)
		rows = append(rows, statusOf(st, r, now))
	}
	rows = a.mergeAgentStatus(cmd.Context(), st, rows, want)
	for n := range want {
		return fmt.Errorf("no certificate named %q in %s", n, st.Dir())
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(a.stdout, "no certificates in %s\n", st.Dir())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	if !detail {
		fmt.Fprintln(tw, "NAME\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\n", r.Name, strings.Join(r.Identifiers, ","), r.NotAfter.UTC().Format(time.RFC3339), r.DaysLeft)
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAME\tIDENTIFIERS\tNOT AFTER\tDAYS LEFT\tARI WINDOW\tRENEW AT\tLAST RESULT")
	for _, r := range rows {
		ari := "-"
		if r.ARIStart != nil {
			ari = r.ARIStart.UTC().Format("2006-01-02 15:04") + " .. " + r.ARIEnd.UTC().Format("2006-01-02 15:04")
		}
		last := "-"
		if r.LastOK != nil {
			last = "ok " + r.LastTime.UTC().Format(time.RFC3339)
			if !*r.LastOK {
				last = "FAILED " + r.LastTime.UTC().Format(time.RFC3339) + ": " + firstLine(r.LastError)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n", r.Name, strings.Join(r.Identifiers, ","),
			r.NotAfter.UTC().Format(time.RFC3339), r.DaysLeft, ari, r.RenewAt.UTC().Format(time.RFC3339), last)
	}
	return tw.Flush()
}

func statusOf(st *store.FS, r store.Record, now time.Time) certStatus {
	d := renew.Due(r, now, 0)
	s := certStatus{
		Name: r.Name, Identifiers: r.Identifiers, CA: r.CA, Version: r.Version, NotAfter: r.NotAfter,
		DaysLeft: math.Round(r.NotAfter.Sub(now).Hours()/24*10) / 10,
		RenewAt:  d.At, RenewReason: d.Reason,
		Fullchain: st.LivePath(r.Name, "fullchain.pem"), Privkey: st.LivePath(r.Name, "privkey.pem"),
		Source: "store",
	}
	for _, p := range r.Paths {
		s.Paths = append(s.Paths, p.Name)
	}
	if r.ARI != nil {
		s.ARIStart, s.ARIEnd = &r.ARI.Start, &r.ARI.End
	}
	if r.Last != nil {
		s.LastOK, s.LastTime, s.LastError = &r.Last.OK, &r.Last.Time, r.Last.Error
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
