//go:build !detour_slim

package dnsprovider

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// fakeLinode is a fake of the Linode API v4 (domains list with X-Filter,
// domain records create, list and delete, paginated), authenticated by a
// Bearer token. The zone is domain 1234 of the account; the account also
// holds another domain, so the filter matters. Its page size is forced to
// 1 when pageSize is set, so listing must follow the pages.
type fakeLinode struct {
	z        *txtZone
	token    string
	pageSize int
	shape    shapeLog

	mu   sync.Mutex
	recs []linodeRecord
	n    int
}

func newFakeLinode(zone, token string) *fakeLinode {
	f := &fakeLinode{z: newTXTZone(zone), token: token, n: 5000}
	// A record of the user's at the same name, which clean-up must keep.
	f.recs = append(f.recs, linodeRecord{ID: 4999, Type: "TXT", Name: "_acme-challenge.dp", Target: "the user's own", TTLSec: 300})
	return f
}

func (f *fakeLinode) apiHost() string   { return "api.linode.com" }
func (f *fakeLinode) records() *txtZone { return f.z }

func linodeFail(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]string{{"reason": reason}}})
}

// page serves items as Linode pages them (page, page_size; pages counted
// from the total).
func linodeServePage[T any](w http.ResponseWriter, r *http.Request, items []T, forced int) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	size, _ := strconv.Atoi(r.URL.Query().Get("page_size"))
	if page < 1 {
		page = 1
	}
	if size < 25 || size > 500 {
		size = 100
	}
	if forced > 0 {
		size = forced
	}
	pages := max(1, (len(items)+size-1)/size)
	lo, hi := min((page-1)*size, len(items)), min(page*size, len(items))
	writeJSON(w, http.StatusOK, map[string]any{"data": items[lo:hi], "page": page, "pages": pages, "results": len(items)})
}

func (f *fakeLinode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		linodeFail(w, http.StatusUnauthorized, "Invalid Token")
		return
	}
	domain := strings.TrimSuffix(f.z.zone, ".")
	records := "/v4/domains/1234/records"
	if msg := f.z.failure(); msg != "" && r.Method != http.MethodGet {
		linodeFail(w, http.StatusForbidden, msg)
		return
	}
	var filter map[string]string
	if x := r.Header.Get("X-Filter"); x != "" {
		if err := json.Unmarshal([]byte(x), &filter); err != nil {
			linodeFail(w, http.StatusBadRequest, "Cannot parse filter: "+x)
			return
		}
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v4/domains":
		f.shape.note("GET /v4/domains filter=%s", r.Header.Get("X-Filter"))
		all := []map[string]any{{"id": 77, "domain": "other.test", "type": "master"}, {"id": 1234, "domain": domain, "type": "master"}}
		var out []map[string]any
		for _, d := range all {
			if filter["domain"] == "" || filter["domain"] == d["domain"] {
				out = append(out, d)
			}
		}
		linodeServePage(w, r, out, 0)
	case r.Method == http.MethodPost && r.URL.Path == records:
		var req linodeRecord
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Type != "TXT" || req.Name == "" {
			linodeFail(w, http.StatusBadRequest, fmt.Sprintf("Invalid record: %+v (%v)", req, err))
			return
		}
		if req.TTLSec != 0 && req.TTLSec < 300 {
			linodeFail(w, http.StatusBadRequest, "ttl_sec: must be at least 300")
			return
		}
		f.shape.note("POST %s type=%s name=%s target=%s ttl_sec=%d", records, req.Type, req.Name, req.Target, req.TTLSec)
		name := strings.TrimSuffix(strings.TrimSuffix(req.Name, "."+domain), "."+domain+".")
		f.mu.Lock()
		f.n++
		rec := linodeRecord{ID: f.n, Type: "TXT", Name: name, Target: req.Target, TTLSec: req.TTLSec}
		f.recs = append(f.recs, rec)
		f.mu.Unlock()
		f.z.add(f.z.relName(name), req.Target)
		writeJSON(w, http.StatusOK, rec)
	case r.Method == http.MethodGet && r.URL.Path == records:
		f.shape.note("GET %s filter=%s", records, r.Header.Get("X-Filter"))
		f.mu.Lock()
		var out []linodeRecord
		for _, rec := range f.recs {
			if filter["type"] == "" || filter["type"] == rec.Type {
				out = append(out, rec)
			}
		}
		f.mu.Unlock()
		linodeServePage(w, r, out, f.pageSize)
	case r.Method == http.MethodDelete && path.Dir(r.URL.Path) == records:
		id, _ := strconv.Atoi(path.Base(r.URL.Path))
		f.shape.note("DELETE %s/{id}", records)
		f.mu.Lock()
		i := slices.IndexFunc(f.recs, func(rec linodeRecord) bool { return rec.ID == id })
		var rec linodeRecord
		if i >= 0 {
			rec = f.recs[i]
			f.recs = slices.Delete(f.recs, i, i+1)
		}
		f.mu.Unlock()
		if i < 0 {
			linodeFail(w, http.StatusNotFound, "Not found")
			return
		}
		f.z.remove(f.z.relName(rec.Name), rec.Target)
		writeJSON(w, http.StatusOK, map[string]any{})
	default:
		linodeFail(w, http.StatusNotFound, "Not found: "+r.Method+" "+r.URL.Path)
	}
}
