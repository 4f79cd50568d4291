package hostcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// The DMI strings below are what each provider's machines show in
// /sys/class/dmi/id (as documented by the providers and seen on their
// machines); each test writes them to a temporary directory.
func TestCloud(t *testing.T) {
	tests := []struct {
		name    string
		dmi     map[string]string
		want    string
		status  check.Status
		mention []string
	}{
		{"digitalocean", map[string]string{"sys_vendor": "DigitalOcean", "product_name": "Droplet", "bios_vendor": "DigitalOcean", "chassis_vendor": "QEMU"},
			CloudDigitalOcean, check.Warning, []string{"doctl compute firewall list-by-droplet", `firewall = "digitalocean"`, "sys_vendor=DigitalOcean"}},
		{"aws nitro", map[string]string{"sys_vendor": "Amazon EC2", "product_name": "t3.micro", "bios_vendor": "Amazon EC2", "board_asset_tag": "i-0123456789abcdef0", "chassis_asset_tag": "Amazon EC2"},
			CloudAWS, check.Warning, []string{"aws ec2 describe-instances --instance-ids i-0123456789abcdef0", "describe-security-groups", `firewall = "aws-sg"`, `firewall_instance = "i-0123456789abcdef0"`}},
		{"aws xen", map[string]string{"sys_vendor": "Xen", "product_name": "HVM domU", "bios_vendor": "Xen", "bios_version": "4.11.amazon", "product_uuid": "EC2E1916-9099-7CAF-FD21-012345678901"},
			CloudAWS, check.Warning, []string{"bios_version=4.11.amazon", "<instance-id>"}},
		{"hetzner", map[string]string{"sys_vendor": "Hetzner", "product_name": "vServer", "bios_vendor": "Hetzner"},
			CloudHetzner, check.Warning, []string{"hcloud firewall list", `firewall = "hetzner"`, "product_name=vServer"}},
		{"gcp", map[string]string{"sys_vendor": "Google", "product_name": "Google Compute Engine", "bios_vendor": "Google"},
			CloudGCP, check.Warning, []string{"gcloud compute firewall-rules list", `firewall = "exec"`, "no Google Cloud firewall backend"}},
		{"kvm", map[string]string{"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX + PIIX, 1996)", "bios_vendor": "SeaBIOS"},
			"", check.Info, []string{"sys_vendor: QEMU"}},
		{"no dmi", nil, "", check.Info, []string{"nothing readable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for f, v := range tc.dmi {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o444); err != nil {
					t.Fatal(err)
				}
			}
			cloud, ev, r := checkCloud(dir)
			if cloud != tc.want || r.Name != "host.cloud" || r.Status != tc.status {
				t.Fatalf("cloud %q (%s): %s", cloud, ev, r)
			}
			if tc.want != "" && ev == "" {
				t.Error("no evidence")
			}
			all := r.String()
			for _, m := range tc.mention {
				if !strings.Contains(all, m) {
					t.Errorf("%q missing from\n%s", m, all)
				}
			}
		})
	}
}
