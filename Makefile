# EdgeID — build, run, test, bench, lint.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/edgeid/edgeid/edge.Version=$(VERSION)
# A count, not a duration: with -fuzztime=Ns, Go 1.26.8 can end a clean run
# with "context deadline exceeded" (golang/go#75804).
FUZZTIME  ?= 20000x

.PHONY: build run test lint vet staticcheck fuzz fuzz-long bench bench-lean bench-fleet clean deb stress32 interop

build:
	mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# The whole system on loopback on an embedded default: an authority
# (in-process, HTTPS on 127.0.0.1:9443), the gateway enrolled to it, the demo
# devices registered there and synced to the gateway, a demo owner; it prints
# the owner login, an edgeid-sensor pair line and a command per device
# (cmd/edgeid/demo_test.go runs them).
run:
	$(GO) run ./cmd/edgeid serve --demo

# Everything CI runs: vet, staticcheck, the race-enabled tests, and each fuzz
# target briefly on its seed corpus and a few seconds of new inputs.
# The packaging test (three cross-builds, two ARM binaries under qemu) runs
# after the others rather than beside them: it would take both cores from
# tests that wait on the network. The patched mochi's own tests run by
# module path: third_party/mochi is a module of its own (go.mod's replace),
# so ./... does not hold it.
test: vet staticcheck
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /packaging$$)
	$(GO) test -race -count=1 -timeout 5m github.com/mochi-mqtt/server/v2/...
	$(GO) test -count=1 -timeout 10m ./packaging/
	$(MAKE) fuzz

vet:
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || (echo "gofmt: files above need formatting" && exit 1)
	$(GO) vet ./...
	$(GO) vet -tags nodemo ./cmd/edgeid/   # as make deb builds it

staticcheck:
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags nodemo ./cmd/edgeid/

lint: vet staticcheck

FUZZ_TARGETS := \
	./policy:FuzzMatch \
	./policy:FuzzSubset \
	./policy:FuzzParseScope \
	./edge/authn:FuzzVerify \
	./edge/authn:FuzzVerifyCWT \
	./edge/broker:FuzzDecodePacket \
	./edge:FuzzLiveGateway

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	done

# By hand: make fuzz-long FUZZTIME=10m
fuzz-long: fuzz

# The Eclipse Paho interoperability suite (MQTT 3.1.1 and 5), each test in its
# own python3 process, against edgeid serve and mochi with no hooks in one run
# (interop/README.md). The suite is supplied by hand in
# third_party/paho.mqtt.testing; without it this exits 2 and says so.
interop:
	interop/run.sh

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./edge/... ./store/...

# Lean connections (docs/BENCHMARKS.md, issue 17): mochi with no hooks,
# Mosquitto and EdgeID (BEFORE=<commit>, default HEAD, and the working tree)
# as processes on loopback, driven by edgeid-sensor; prints both tables.
# Needs mosquitto and python3; about 5 minutes.
bench-lean:
	scripts/bench-lean.sh

# The authority at fleet scale (issue 16; docs/BENCHMARKS.md): a million
# devices, a thousand gateway event streams, Badger and PostgreSQL side by
# side. Needs PostgreSQL's binaries; takes about 15 minutes. Smaller:
# make bench-fleet EDGEID_FLEET_DEVICES=20000 EDGEID_FLEET_SITES=200 EDGEID_FLEET_GATEWAYS=100
bench-fleet:
	EDGEID_FLEET_BENCH=1 $(GO) test -run='^TestFleetBenchmark$$' -timeout 60m -v -count=1 ./cloudsync/authority/fleetbench/

# Debian packages for the gateway and the authority. armhf is ARMv7 with
# hardware float (GOARCH=arm GOARM=7, nfpm's arm7); it needs the patched
# ristretto in third_party (docs/OPERATIONS.md, "32-bit boards").
DEB_ARCHES ?= arm64 armhf amd64
DEB_VERSION ?= $(shell git describe --tags --match 'v*' 2>/dev/null | sed 's/^v//' || true)
DEB_VERSION := $(if $(DEB_VERSION),$(DEB_VERSION),0.1.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0))
deb:
	mkdir -p dist
	@for arch in $(DEB_ARCHES); do \
		echo "building $$arch"; \
		mkdir -p bin/pkg && gzip -9n < packaging/changelog > bin/pkg/changelog.gz; \
		goarch=$$arch; nfpmarch=$$arch; \
		if [ $$arch = armhf ]; then goarch=arm; nfpmarch=arm7; fi; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$goarch GOARM=7 $(GO) build -trimpath -tags nodemo -ldflags '-s -w -X github.com/edgeid/edgeid/edge.Version=$(DEB_VERSION)' -o bin/pkg/ ./cmd/edgeid ./cmd/edgeid-authority || exit 1; \
		for pkg in edgeid authority; do \
			ARCH=$$nfpmarch VERSION=$(DEB_VERSION) $(GO) tool nfpm package --config packaging/nfpm-$$pkg.yaml --packager deb --target dist/ || exit 1; \
		done; \
	done
	@ls -l dist/

# The store's own write, TTL and compaction workload as a 32-bit (GOARCH=386)
# binary: what armhf relies on (docs/OPERATIONS.md, "32-bit boards").
stress32:
	mkdir -p bin
	GOARCH=386 $(GO) test -c -o bin/store386.test ./store/
	EDGEID_STRESS=1 ./bin/store386.test -test.run TestStress32 -test.v -test.timeout 30m

clean:
	rm -rf bin dist
