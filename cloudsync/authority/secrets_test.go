package authority_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/edgeid/edgeid/store"
)

// Issue 15: the admin API answered with the devices' DTLS pre-shared keys.
// The rest of the record is still shown, the PSK never.
func TestAdminDevicesHidePSK(t *testing.T) {
	f := newFixture(t)
	f.classes()
	psk := bytes.Repeat([]byte{0x5a, 0xa5, 0x17, 0x42}, 8)
	b, _ := json.Marshal(store.Batch{Devices: []store.Device{{ID: "dev-1", Class: "thermostat", Status: store.DeviceActive,
		Serial: "SN-1", PSKIdentity: "dev-1-psk", PSK: psk}}})
	if code, body := f.do("POST", "/admin/v1/import", adminToken, "application/json", string(b), nil); code != 200 {
		t.Fatalf("import: %d %s", code, body)
	}
	if d, err := f.a.Store.Device("dev-1"); err != nil || !bytes.Equal(d.PSK, psk) {
		t.Fatalf("the store must keep the PSK: %v %x", err, d.PSK)
	}
	for _, path := range []string{"/admin/v1/devices", "/admin/v1/devices/dev-1"} {
		code, body := f.do("GET", path, adminToken, "", "", nil)
		if code != 200 {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if strings.Contains(body, `"psk"`) || strings.Contains(body, base64.StdEncoding.EncodeToString(psk)) {
			t.Errorf("%s returns the PSK: %s", path, body)
		}
		var d store.Device
		if path == "/admin/v1/devices" {
			var ds []store.Device
			if err := json.Unmarshal([]byte(body), &ds); err != nil || len(ds) != 1 {
				t.Fatalf("%s: %v %s", path, err, body)
			}
			d = ds[0]
		} else if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatalf("%s: %v %s", path, err, body)
		}
		if d.ID != "dev-1" || d.Class != "thermostat" || d.Serial != "SN-1" || d.PSKIdentity != "dev-1-psk" || d.Status != store.DeviceActive {
			t.Errorf("%s: the rest of the record is lost: %+v", path, d)
		}
	}
}
