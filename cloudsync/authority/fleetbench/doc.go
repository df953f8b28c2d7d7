// Package fleetbench holds the authority's fleet-scale benchmark (issue 16):
// a million devices in ten thousand sites, a thousand simulated gateways on
// event streams, revocation latency and sustained admin writes, on the
// Badger store (one process) and on PostgreSQL (two replicas), side by side
// in one run. It is a gated test, never part of make test:
//
//	make bench-fleet
//	EDGEID_FLEET_BENCH=1 go test -run TestFleetBenchmark -timeout 60m -v -count=1 ./cloudsync/authority/fleetbench/
//
// fleet_test.go has the scale knobs (environment variables) and what each
// figure measures; docs/BENCHMARKS.md has the results.
package fleetbench
