package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// SweepTemps removes the temporary files that writes killed half-way left
// anywhere in the state directory except live/ (whose leftovers Recover
// removes under the certificate's lock), when they are older than
// olderThan: a younger one may belong to a write another process is doing
// now (a write takes milliseconds). Such files never affect what is read
// (List and the certificate layout ignore them); sweeping only keeps the
// directory clean. It returns how many files it removed.
func (f *FS) SweepTemps(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	live := filepath.Join(f.dir, "live")
	n := 0
	err := filepath.WalkDir(f.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p == live {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tmpPrefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		n++
		f.log.Info("removed a temporary file an interrupted write left", "file", p)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("sweeping temporary files in %s: %w", f.dir, err)
	}
	return n, nil
}
