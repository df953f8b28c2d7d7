package hw

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// dmiPlaceholders are values firmware vendors leave in DMI fields instead of
// a real serial; using one would give every such board the same identity.
var dmiPlaceholders = map[string]bool{
	"":                                     true,
	"not specified":                        true,
	"default string":                       true,
	"to be filled by o.e.m.":               true,
	"system serial number":                 true,
	"none":                                 true,
	"not applicable":                       true,
	"03000200-0400-0500-0006-000700080009": true,
}

// Serial returns the board's hardware identity, read from the first source
// that has a usable value: the Raspberry Pi "Serial" line of /proc/cpuinfo,
// the device-tree serial-number, the DMI product_serial then product_uuid
// (x86), and finally /etc/machine-id. Placeholders and all-zero values are
// skipped because they are shared by many machines. root prefixes every path
// so tests can use a fake tree; "" means "/".
func Serial(root string) (string, error) {
	if root == "" {
		root = "/"
	}
	sources := []struct {
		rel   string
		parse func([]byte) (string, string)
	}{
		{"proc/cpuinfo", parseCPUInfo},
		{"sys/firmware/devicetree/base/serial-number", parseDeviceTree},
		{"sys/class/dmi/id/product_serial", parseDMI},
		{"sys/class/dmi/id/product_uuid", parseDMI},
		{"etc/machine-id", parseMachineID},
	}
	var tried []string
	for _, src := range sources {
		path := filepath.Join(root, src.rel)
		data, err := os.ReadFile(path)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s)", path, readReason(err)))
			continue
		}
		val, why := src.parse(data)
		if val != "" {
			return val, nil
		}
		tried = append(tried, fmt.Sprintf("%s (%s)", path, why))
	}
	return "", fmt.Errorf("hw: no hardware serial found; tried %s", strings.Join(tried, ", "))
}

func readReason(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "missing"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	default:
		return err.Error()
	}
}

// allZero reports serials like "0000000000000000" that some boards and
// emulators report when the real one is unknown.
func allZero(s string) bool {
	return strings.Trim(s, "0-") == ""
}

func parseCPUInfo(data []byte) (string, string) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	found := false
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "Serial" {
			continue
		}
		found = true
		if val = strings.TrimSpace(val); !allZero(val) {
			return val, ""
		}
	}
	if found {
		return "", "all-zero Serial"
	}
	return "", "no Serial line"
}

func parseDeviceTree(data []byte) (string, string) {
	// Device-tree strings are NUL-terminated.
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	val := strings.TrimSpace(string(data))
	if allZero(val) {
		return "", "empty or all-zero"
	}
	return val, ""
}

func parseDMI(data []byte) (string, string) {
	val := strings.TrimSpace(string(data))
	if dmiPlaceholders[strings.ToLower(val)] || allZero(val) || strings.Trim(strings.ToLower(val), "f-") == "" {
		return "", "placeholder " + fmt.Sprintf("%q", val)
	}
	return val, ""
}

func parseMachineID(data []byte) (string, string) {
	val := strings.TrimSpace(string(data))
	if val == "" || val == "uninitialized" || allZero(val) {
		return "", "empty or uninitialized"
	}
	return val, ""
}
