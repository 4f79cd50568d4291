package fleet

import (
	"context"
	"errors"
	"time"
)

// DeployNow brings certificate name on this node in line with the fleet's
// live version at once, for a command run by hand (detour issue, detour
// renew) that has just stored it: the same steps as Run (live/, record,
// plan, report), once. It must not run while this Deployer's Run does.
func (d *Deployer) DeployNow(ctx context.Context, name string) error {
	if d.running.Load() {
		return errors.New("deploying now: this Deployer runs already; it deploys by itself")
	}
	if d.reports == nil {
		d.reports, d.logged, d.down = map[string]*reportState{}, map[string]string{}, time.Time{}
	}
	return d.deployOne(ctx, name, 0)
}
