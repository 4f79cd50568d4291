package hostcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/firewall"
)

// dmiFiles are the DMI identification files read, in evidence order.
var dmiFiles = []string{"sys_vendor", "product_name", "product_version", "bios_vendor", "bios_version",
	"board_vendor", "board_asset_tag", "chassis_vendor", "chassis_asset_tag", "product_uuid"}

// readDMI reads the DMI identification strings under root; missing or
// unreadable files are left out.
func readDMI(root string) map[string]string {
	out := map[string]string{}
	for _, f := range dmiFiles {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		if v := strings.TrimSpace(string(b)); v != "" {
			out[f] = v
		}
	}
	return out
}

// detectCloud names the cloud provider DMI data shows, and the strings
// that show it.
func detectCloud(dmi map[string]string) (string, string) {
	var ev []string
	has := func(file, want string, match func(string, string) bool) bool {
		v, ok := dmi[file]
		if ok && match(strings.ToLower(v), strings.ToLower(want)) {
			ev = append(ev, file+"="+v)
			return true
		}
		return false
	}
	eq := func(a, b string) bool { return a == b }
	contains := strings.Contains
	prefix := strings.HasPrefix
	any := func(checks ...bool) bool {
		for _, c := range checks {
			if c {
				return true
			}
		}
		return false
	}
	switch {
	case any(has("sys_vendor", "DigitalOcean", eq), has("bios_vendor", "DigitalOcean", eq), has("board_vendor", "DigitalOcean", eq),
		has("chassis_vendor", "DigitalOcean", eq), has("product_name", "Droplet", eq)):
		return CloudDigitalOcean, strings.Join(ev, ", ")
	case any(has("sys_vendor", "Amazon EC2", eq), has("bios_vendor", "Amazon EC2", eq), has("chassis_asset_tag", "Amazon EC2", eq),
		has("board_vendor", "Amazon EC2", eq), has("bios_version", ".amazon", contains), has("product_version", "amazon", contains),
		has("product_uuid", "ec2", prefix)):
		if tag := dmi["board_asset_tag"]; strings.HasPrefix(tag, "i-") {
			ev = append(ev, "board_asset_tag="+tag)
		}
		return CloudAWS, strings.Join(ev, ", ")
	case any(has("sys_vendor", "Hetzner", eq), has("board_vendor", "Hetzner", eq), has("chassis_vendor", "Hetzner", eq)):
		if p := dmi["product_name"]; p != "" {
			ev = append(ev, "product_name="+p)
		}
		return CloudHetzner, strings.Join(ev, ", ")
	case any(has("sys_vendor", "Google", eq), has("product_name", "Google Compute Engine", eq), has("bios_vendor", "Google", eq)):
		return CloudGCP, strings.Join(ev, ", ")
	}
	return "", ""
}

// checkCloud reports whether this host runs on a cloud whose firewall may
// drop inbound traffic before it arrives: "host.cloud". It reads DMI data
// only; it never asks a metadata endpoint.
func checkCloud(dmiRoot string) (string, string, check.Result) {
	dmi := readDMI(dmiRoot)
	if len(dmi) == 0 {
		r := check.New("host.cloud", "", check.Info, "no DMI identification: not a known cloud machine (or a container)")
		r.Add("nothing readable in %s", dmiRoot)
		return "", "", r
	}
	cloud, ev := detectCloud(dmi)
	if cloud == "" {
		r := check.New("host.cloud", "", check.Info, "not a known cloud machine (DigitalOcean, AWS, Hetzner, Google Cloud)")
		for _, f := range []string{"sys_vendor", "product_name", "bios_vendor"} {
			if v, ok := dmi[f]; ok {
				r.Add("%s: %s", f, v)
			}
		}
		return "", "", r
	}
	var title, fw, how, fix string
	switch cloud {
	case CloudDigitalOcean:
		title, fw = "a DigitalOcean droplet", "DigitalOcean Cloud Firewalls"
		how = "`doctl compute firewall list-by-droplet <droplet-id>` (control panel: Networking > Firewalls)"
		fix = fmt.Sprintf("if a Cloud Firewall drops TCP 80/443, set firewall = %q and %s = \"<droplet-id>\" on the path (with a token allowed to write firewalls): Detour opens an inbound rule only while the CA validates", firewall.NameDigitalOcean, firewall.KeyInstance)
	case CloudAWS:
		title, fw = "an Amazon EC2 instance", "EC2 security groups (and the subnet's network ACL)"
		id := "<instance-id>"
		if tag := dmi["board_asset_tag"]; strings.HasPrefix(tag, "i-") {
			id = tag
		}
		how = fmt.Sprintf("`aws ec2 describe-instances --instance-ids %s --query 'Reservations[].Instances[].SecurityGroups'`, then `aws ec2 describe-security-groups --group-ids <sg-id>`", id)
		fix = fmt.Sprintf("if no security group rule allows TCP 80/443 from 0.0.0.0/0 (and ::/0), set firewall = %q and %s = %q on the path (with an IAM policy allowing ec2:AuthorizeSecurityGroupIngress and ec2:RevokeSecurityGroupIngress): Detour opens a rule only while the CA validates", firewall.NameAWSSG, firewall.KeyInstance, id)
	case CloudHetzner:
		title, fw = "a Hetzner Cloud server", "Hetzner Cloud Firewalls"
		how = "`hcloud firewall list` and `hcloud firewall describe <name>` (console: Firewalls)"
		fix = fmt.Sprintf("if a Cloud Firewall applied to this server lacks an inbound rule for TCP 80/443, set firewall = %q and %s = \"<server-id>\" on the path (with a read-write API token): Detour adds the rule only while the CA validates", firewall.NameHetzner, firewall.KeyInstance)
	case CloudGCP:
		title, fw = "a Google Compute Engine instance", "VPC firewall rules"
		how = "`gcloud compute firewall-rules list --filter=\"direction=INGRESS\"` and the instance's network tags (`gcloud compute instances describe <name>`)"
		fix = fmt.Sprintf("if no VPC rule allows TCP 80/443 to this instance, add one (for example `gcloud compute firewall-rules create allow-acme --allow tcp:80,tcp:443 --target-tags <tag>`); Detour has no Google Cloud firewall backend yet: to open it only while validating, use firewall = %q with %s and %s naming your own scripts", firewall.NameExec, firewall.KeyOpen, firewall.KeyClose)
	}
	r := check.New("host.cloud", "", check.Warning, fmt.Sprintf("this host is %s: %s may also drop inbound traffic, before it reaches the host's own firewall", title, fw))
	r.Add("DMI: %s", ev)
	r.Add("check with %s", how)
	r.Fix = fix
	return cloud, ev, r
}
