package hw

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree writes files (path relative to a temp root -> content) and returns
// the root.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	cpuinfo   = "proc/cpuinfo"
	dtSerial  = "sys/firmware/devicetree/base/serial-number"
	dmiSerial = "sys/class/dmi/id/product_serial"
	dmiUUID   = "sys/class/dmi/id/product_uuid"
	machineID = "etc/machine-id"
)

const piCPUInfo = `processor	: 0
model name	: ARMv7 Processor rev 4 (v7l)
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32

Hardware	: BCM2835
Revision	: a02082
Serial		: 00000000a1b2c3d4
Model		: Raspberry Pi 3 Model B Rev 1.2
`

func TestSerial(t *testing.T) {
	everything := map[string]string{
		dtSerial:  "dt-serial\x00",
		dmiSerial: "dmi-serial\n",
		dmiUUID:   "dmi-uuid\n",
		machineID: "0123456789abcdef0123456789abcdef\n",
	}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range everything {
			m[k] = v
		}
		for k, v := range extra {
			if v == "-" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"raspberry pi cpuinfo", with(map[string]string{cpuinfo: piCPUInfo}), "00000000a1b2c3d4"},
		{"all-zero cpuinfo serial skipped", with(map[string]string{cpuinfo: "Serial\t\t: 0000000000000000\n"}), "dt-serial"},
		{"cpuinfo without Serial", with(map[string]string{cpuinfo: "processor\t: 0\nvendor_id\t: GenuineIntel\n"}), "dt-serial"},
		{"device tree NUL-terminated", with(map[string]string{dtSerial: "10000000deadbeef\x00"}), "10000000deadbeef"},
		{"device tree all zero", with(map[string]string{dtSerial: "0000000000000000\x00"}), "dmi-serial"},
		{"dmi product_serial", with(map[string]string{dtSerial: "-"}), "dmi-serial"},
		{"dmi Not Specified falls to uuid", with(map[string]string{dtSerial: "-", dmiSerial: "Not Specified\n"}), "dmi-uuid"},
		{"dmi Default string falls to uuid", with(map[string]string{dtSerial: "-", dmiSerial: "Default string\n"}), "dmi-uuid"},
		{"dmi empty falls to uuid", with(map[string]string{dtSerial: "-", dmiSerial: "\n"}), "dmi-uuid"},
		{"dmi serial missing falls to uuid", with(map[string]string{dtSerial: "-", dmiSerial: "-"}), "dmi-uuid"},
		{"dmi placeholders fall to machine-id", with(map[string]string{dtSerial: "-", dmiSerial: "Default string", dmiUUID: "Not Specified"}), "0123456789abcdef0123456789abcdef"},
		{"machine-id only", map[string]string{machineID: "abc123\n"}, "abc123"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Serial(tree(t, c.files))
			if err != nil || got != c.want {
				t.Errorf("Serial = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestSerialNoneFound(t *testing.T) {
	root := tree(t, map[string]string{
		cpuinfo:   "Serial : 0000000000000000\n",
		dmiSerial: "Not Specified\n",
		machineID: "\n",
	})
	_, err := Serial(root)
	if err == nil {
		t.Fatal("Serial succeeded with no usable source")
	}
	for _, rel := range []string{cpuinfo, dtSerial, dmiSerial, dmiUUID, machineID} {
		if !strings.Contains(err.Error(), filepath.Join(root, rel)) {
			t.Errorf("error does not name %s: %v", rel, err)
		}
	}
}

func TestSerialEmptyRootIsSlash(t *testing.T) {
	got, err := Serial("")
	if err != nil {
		if !strings.Contains(err.Error(), "/etc/machine-id") {
			t.Errorf("error does not name /etc/machine-id: %v", err)
		}
		return
	}
	if got == "" {
		t.Error("empty serial without error")
	}
}
