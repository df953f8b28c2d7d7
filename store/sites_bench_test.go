package store_test

import (
	"fmt"
	"testing"

	"github.com/edgeid/edgeid/policy"
	"github.com/edgeid/edgeid/store"
)

// A logged (authority) import in batches of 1,000 devices, 100 per site
// and owner, with the sites bookkeeping: the cost per device of a commit.
//
//	go test -run '^$' -bench 'LoggedImport|StatusChange' -benchtime 5x -count 3 ./store/
func BenchmarkLoggedImport(b *testing.B) {
	const batches, per = 10, 1000
	for range b.N {
		b.StopTimer()
		s := openStore(b, b.TempDir())
		if _, err := s.ApplyLoggedBy(&store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: []policy.Rule{{Filter: "t/{device}", Actions: policy.Publish}}}}}, "bench"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for i := range batches {
			bt := &store.Batch{}
			for j := range per {
				n := i*per + j
				site := fmt.Sprintf("site-%d", n/100)
				if n%100 == 0 {
					bt.Users = append(bt.Users, store.User{ID: "owner-" + site, Status: store.UserActive})
				}
				bt.Devices = append(bt.Devices, store.Device{ID: fmt.Sprintf("dev-%d", n), Class: "sensor", Status: store.DeviceActive, Owner: "owner-" + site, Site: site})
			}
			if _, err := s.ApplyLoggedBy(bt, "bench"); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*batches*per)/b.Elapsed().Seconds(), "devices/s")
}

// A status change of one device whose owner owns 100 more: what an admin
// suspend costs.
func BenchmarkStatusChange(b *testing.B) {
	s := openStore(b, b.TempDir())
	defer s.Close()
	bt := &store.Batch{Classes: []store.DeviceClass{{Name: "sensor", Permissions: []policy.Rule{{Filter: "t/{device}", Actions: policy.Publish}}}},
		Users: []store.User{{ID: "owner", Status: store.UserActive}}}
	for n := range 100 {
		bt.Devices = append(bt.Devices, store.Device{ID: fmt.Sprintf("dev-%d", n), Class: "sensor", Status: store.DeviceActive, Owner: "owner", Site: "home"})
	}
	if _, err := s.ApplyLoggedBy(bt, "bench"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		d, _ := s.Device("dev-7")
		d.Status = store.DeviceActive
		if i%2 == 0 {
			d.Status = store.DeviceSuspended
		}
		if _, err := s.ApplyLoggedBy(&store.Batch{Devices: []store.Device{d}}, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
