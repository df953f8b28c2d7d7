#!/usr/bin/env bash
# Lean connections (issue 17): publish throughput and memory with idle
# sessions, EdgeID against mochi-mqtt with no hooks and Mosquitto, each broker
# a process of its own on loopback, driven by edgeid-sensor from another
# process. Prints two Markdown tables (docs/BENCHMARKS.md, "Lean connections
# (issue 17)").
#
#   scripts/bench-lean.sh          (make bench-lean; BEFORE=<commit> make bench-lean)
#
# Brokers, each started afresh for every measurement:
#   mochi      interop/mochi, built from the same tree as "after": that tree's
#              mochi-mqtt (third_party/mochi, through go.mod) with only the
#              allow-all auth hook (mochi refuses every client without an auth
#              hook), its default options
#   mochi-before  the same, built from $BEFORE (what a change to
#              third_party/mochi does to mochi itself)
#   mosquitto  Debian's mosquitto: password file (mosquitto_passwd -U) and ACL
#              file granting what the EdgeID classes and tokens grant,
#              persistence off
#   before     `edgeid serve` built from $BEFORE in a temporary git worktree,
#              with that commit's configs/edgeid.yaml
#   after      `edgeid serve` built from the working tree (or from $AFTER, a
#              commit, in a temporary worktree), with its configs/edgeid.yaml
# EdgeID runs on its shipped configuration file; the environment sets only
# what the run needs: EDGEID_STATE_DIR, EDGEID_MQTT_TCP, EDGEID_MQTT_TLS_LISTEN
# and EDGEID_METRICS_LISTEN (free ports on 127.0.0.1), EDGEID_ADMIN_SOCKET.
# Its store is a copy of one made once per build with `edgeid import` of
# `edgeid-sensor provision`'s batches (demo issuer and classes, the bench
# devices); throttle, connect rate, half-open caps, log level as shipped. The
# publishers' class carries its own limits.device out of the bench's reach
# (the shipped 50 messages/s per device would make it a throttle test).
#
# Load (edgeid-sensor, built once from the working tree, used for all):
#   pubsub  PAIRS publisher/subscriber pairs at QOS, SIZE-byte payloads,
#           publishers as fast as the broker takes them for DURATION; the
#           figure is messages delivered while they sent, per second
#   idle    N MQTT 5 sessions (tokens for EdgeID, fresh to each gateway
#           process; username/password for Mosquitto; none for mochi) from
#           SOURCES loopback addresses, CONCURRENCY connects in flight;
#           connects/s, and the broker's VmRSS before any session and SETTLE
#           seconds after the last CONNACK
#
# Environment (defaults):
#   BEFORE=HEAD  AFTER=(the working tree)  ROUNDS=3  SESSIONS="1000 10000"  PAIRS=8  QOS=0  SIZE=64
#   RECONNECT_SESSIONS=10000   a reconnect storm: N sessions connect, all
#                end (DISCONNECT) and all connect again with the same
#                credentials (EdgeID has verified each token once); the
#                second pass's connects/s, a row of its own
#   TLS_SESSIONS=1000   idle sessions over TLS too (EdgeID's self-signed
#                certificate; mochi gets the same one; not Mosquitto nor
#                mochi-before), a row of their own
#   DURATION=5s  SOURCES=1000  CONCURRENCY=100  SETTLE=2
#   BROKERS="mochi mosquitto before after"   (a subset runs only those; add
#                mochi-before to measure mochi at $BEFORE too)
#   OUT=FILE     also write the tables there
#   PPROF_DIR=dir   EdgeID's heap profile, /proc status and go_ metrics with
#                   the idle sessions connected (status0-*: before them), into dir
#   PPROF_CPU=1     with PPROF_DIR, also CPU profiles of the connects and the publishing
#   EDGEID_ENV="EDGEID_MQTT_MAX_PENDING_WRITES=8192 ..."   extra settings for
#                both EdgeID builds (off the shipped configuration: a what-if)
#   KEEP=1       keep the work directory (logs, raw results.jsonl)
#
# Needs go, git, python3, mosquitto and mosquitto_passwd (Debian: mosquitto,
# mosquitto-clients is not needed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BEFORE=${BEFORE:-HEAD}
AFTER=${AFTER:-}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS-"1000 10000"} # SESSIONS="": throughput only
TLS_SESSIONS=${TLS_SESSIONS-1000}  # TLS_SESSIONS="": no TLS idle runs
RECONNECT_SESSIONS=${RECONNECT_SESSIONS-10000} # "": no reconnect storms
PAIRS=${PAIRS:-8}
QOS=${QOS:-0}
SIZE=${SIZE:-64}
DURATION=${DURATION:-5s}
SOURCES=${SOURCES:-1000}
CONCURRENCY=${CONCURRENCY:-100}
SETTLE=${SETTLE:-2}
PPROF_DIR=${PPROF_DIR:-}
PPROF_CPU=${PPROF_CPU:-}
BROKERS=${BROKERS:-"mochi mosquitto before after"}
KEEP=${KEEP:-0}
EDGEID_ENV=${EDGEID_ENV:-}
OUT=${OUT:-}

die() { echo "bench-lean: $*" >&2; exit 2; }
say() { echo "bench-lean: [$(($(date +%s) - ${STARTED:-$(date +%s)}))s] $*" >&2; }
for c in go git python3 mosquitto mosquitto_passwd; do
	command -v "$c" >/dev/null || die "$c is needed"
done
BEFORE_REV=$(git rev-parse --verify "$BEFORE^{commit}") || die "BEFORE=$BEFORE is not a commit"

# 10,000 sessions take as many descriptors in the broker (Go raises its own
# soft limit; Mosquitto inherits this one).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 10100 ] || say "warning: ulimit -n is $(ulimit -n)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgeid-bench-lean.XXXXXX")
BIN=$WORK/bin
mkdir -p "$BIN"
PIDS=()
WORKTREE=""
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "$WORKTREE" ]; then git -C "$ROOT" worktree remove --force "$WORKTREE" 2>/dev/null || true; fi
	if [ "$KEEP" = 1 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

STARTED=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average at start: $LOAD_START ($(nproc) CPUs)"

# --- build -------------------------------------------------------------------
LDFLAGS='-s -w' # as make build
# Built as the .deb builds them (make deb): static, without cgo. With cgo, a
# dynamically linked edgeid maps libc, libcap and NSS modules for its admin
# group's lookup (~2.5 MiB more RSS) that the shipped binary does not.
export CGO_ENABLED=0
# and, for edgeid, with the nodemo tag: the .deb's edgeid carries no
# embedded demo authority (cmd/edgeid/demo_off.go). An earlier commit
# without the tag builds as it was.
TAGS=nodemo
# in_worktree REV DIR: check REV out into a temporary worktree at DIR.
in_worktree() {
	WORKTREE=$2
	git -C "$ROOT" worktree add --quiet --detach "$2" "$1" || die "git worktree add $1 failed"
}
drop_worktree() {
	git -C "$ROOT" worktree remove --force "$WORKTREE"
	WORKTREE=""
}
say "building edgeid-sensor (working tree)"
go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/" ./cmd/edgeid-sensor || die "build failed"
# The "after" tree gives edgeid-after and the mochi baseline (its third_party/mochi).
if [ -n "$AFTER" ]; then
	AFTER_REV=$(git rev-parse --verify "$AFTER^{commit}") || die "AFTER=$AFTER is not a commit"
	AFTER_DESC=${AFTER_REV:0:12}
	say "building edgeid and the mochi baseline at $AFTER_DESC in a temporary worktree"
	in_worktree "$AFTER_REV" "$WORK/after-src"
	AFTER_SRC=$WORKTREE
else
	AFTER_DESC="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ', with changes')"
	say "building edgeid and the mochi baseline from the working tree"
	AFTER_SRC=$ROOT
fi
(cd "$AFTER_SRC" && go build -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$BIN/edgeid-after" ./cmd/edgeid &&
	go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/mochi" ./interop/mochi) || die "build of the after tree failed"
cp "$AFTER_SRC/configs/edgeid.yaml" "$WORK/edgeid-after.yaml"
[ -z "$WORKTREE" ] || drop_worktree
say "building edgeid at ${BEFORE_REV:0:12} in a temporary worktree"
in_worktree "$BEFORE_REV" "$WORK/before-src"
(cd "$WORKTREE" && go build -trimpath -tags "$TAGS" -ldflags "$LDFLAGS" -o "$BIN/edgeid-before" ./cmd/edgeid) || die "build of $BEFORE failed"
case " $BROKERS " in *" mochi-before "*)
	(cd "$WORKTREE" && go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/mochi-before" ./interop/mochi) || die "build of mochi at $BEFORE failed"
	;;
esac
cp "$WORKTREE/configs/edgeid.yaml" "$WORK/edgeid-before.yaml"
drop_worktree

# --- provisioning ----------------------------------------------------------------
MAXN=0
for n in $SESSIONS $TLS_SESSIONS $RECONNECT_SESSIONS; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
PROV=$WORK/prov
"$BIN/edgeid-sensor" provision --out "$PROV" --pairs "$PAIRS" --sessions "$MAXN" >&2
cp "$PROV/mosquitto.passwd" "$PROV/mosquitto.passwd.hashed"
mosquitto_passwd -U "$PROV/mosquitto.passwd.hashed" || die "mosquitto_passwd -U failed"

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # port pid
	local i
	for i in $(seq 300); do
		kill -0 "$2" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime; the names have no spaces
TCK=$(getconf CLK_TCK)

# forget PID: no longer ours to kill at exit.
forget() {
	local p keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}
# stop PID: SIGTERM, then SIGKILL after 10 s.
stop() {
	local i
	if kill "$1" 2>/dev/null; then
		for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$1" 2>/dev/null || true
	fi
	wait "$1" 2>/dev/null || true
	forget "$1"
}

# start_edgeid VARIANT DIR STATE: edgeid serve on the shipped file; sets BPID BPORT.
start_edgeid() {
	local v=$1 d=$2 i
	BPORT=$(free_port)
	BTLSPORT=$(free_port)
	BMETRICS=$(free_port)
	# shellcheck disable=SC2086
	env $EDGEID_ENV EDGEID_STATE_DIR=$3 EDGEID_MQTT_TCP=127.0.0.1:$BPORT EDGEID_MQTT_TLS_LISTEN=127.0.0.1:$BTLSPORT \
		EDGEID_METRICS_LISTEN=127.0.0.1:$BMETRICS EDGEID_ADMIN_SOCKET=$d/admin.sock \
		"$BIN/edgeid-$v" serve -c "$WORK/edgeid-$v.yaml" >"$d/broker.log" 2>&1 &
	BPID=$!
	PIDS+=("$BPID")
	wait_port "$BPORT" "$BPID" || { tail -20 "$d/broker.log" >&2; die "edgeid-$v did not start"; }
	for i in $(seq 100); do [ -S "$d/admin.sock" ] && break; sleep 0.1; done
}

# One store per EdgeID build, imported once and copied for every run.
for v in before after; do
	case " $BROKERS " in *" $v "*) ;; *) continue ;; esac
	d=$WORK/template-$v
	mkdir -p "$d"
	start_edgeid "$v" "$d" "$d/state"
	for f in "$PROV"/batch-*.json; do
		"$BIN/edgeid-$v" import --socket "$d/admin.sock" "$f" >>"$d/import.log" 2>&1 ||
			{ cat "$d/import.log" >&2; die "edgeid-$v import $f failed"; }
	done
	stop "$BPID"
	say "edgeid-$v: store imported ($(tail -n1 "$d/import.log"))"
done

# mochi_tls_dir: the directory of the certificate mochi serves TLS with, an
# EdgeID build's self-signed one (made when its store was imported); empty
# when no EdgeID build runs (then mochi serves no TLS).
mochi_tls_dir() {
	local t
	for t in after before; do
		if [ -f "$WORK/template-$t/state/tls/server.crt" ]; then
			echo "$WORK/template-$t/state/tls"
			return
		fi
	done
}

# start_broker KIND DIR: sets BPID BPORT (and BTLSPORT).
start_broker() {
	local kind=$1 d=$2
	mkdir -p "$d"
	case $kind in
	mochi | mochi-before)
		BPORT=$(free_port)
		BTLSPORT=$(free_port)
		local tlsargs=() tlsdir
		# mochi (the after tree's) also serves TLS, with EdgeID's certificate
		tlsdir=$(mochi_tls_dir)
		if [ "$kind" = mochi ] && [ -n "$TLS_SESSIONS" ] && [ -n "$tlsdir" ]; then
			tlsargs=(-tls-addr "127.0.0.1:$BTLSPORT" -tls-cert "$tlsdir/server.crt" -tls-key "$tlsdir/server.key")
		fi
		"$BIN/$kind" -addr "127.0.0.1:$BPORT" "${tlsargs[@]}" >"$d/broker.log" 2>&1 &
		BPID=$!
		PIDS+=("$BPID")
		wait_port "$BPORT" "$BPID" || { cat "$d/broker.log" >&2; die "mochi did not start"; }
		;;
	mosquitto)
		BPORT=$(free_port)
		{
			echo "listener $BPORT 127.0.0.1"
			echo "allow_anonymous false"
			echo "password_file $PROV/mosquitto.passwd.hashed"
			echo "acl_file $PROV/mosquitto.acl"
			echo "persistence false"
			echo "log_type error"
			[ "$(id -u)" != 0 ] || echo "user root" # the files are root's
		} >"$d/mosquitto.conf"
		mosquitto -c "$d/mosquitto.conf" >"$d/broker.log" 2>&1 &
		BPID=$!
		PIDS+=("$BPID")
		wait_port "$BPORT" "$BPID" || { cat "$d/broker.log" >&2; die "mosquitto did not start"; }
		;;
	before | after)
		cp -a "$WORK/template-$kind/state" "$d/state"
		start_edgeid "$kind" "$d" "$d/state"
		;;
	esac
}

# creds KIND FILE: the sensor's credential flags.
creds() {
	case $1 in
	mochi | mochi-before) ;;
	mosquitto) echo "--username {id} --password pw-{id}" ;;
	*) echo "--tokens $2" ;;
	esac
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
record() { # JSON-object-fields... : one line of results
	python3 -c 'import json, sys; d = {}
for a in sys.argv[1:]:
    k, v = a.split("=", 1)
    try: d[k] = json.loads(v)
    except ValueError: d[k] = v
print(json.dumps(d))' "$@" >>"$RESULTS"
}

# profiling KIND: PPROF_DIR is set and KIND is an EdgeID build (the others
# serve no profiles).
profiling() { [ -n "$PPROF_DIR" ] && [ "$1" = before -o "$1" = after ]; }

pubsub_round() { # KIND ROUND
	local kind=$1 r=$2 d=$WORK/run/pubsub-$1-$2 c0 c1 t0 t1 res
	start_broker "$kind" "$d"
	sleep 1
	if profiling "$kind" && [ -n "$PPROF_CPU" ]; then
		mkdir -p "$PPROF_DIR" # the CPU profile of the publishing
		curl -fsS -o "$PPROF_DIR/cpu-pubsub-$kind-$r.pb.gz" "http://127.0.0.1:$BMETRICS/debug/pprof/profile?seconds=${DURATION%s}" &
	fi
	c0=$(cpu_ticks "$BPID")
	t0=$(date +%s.%N)
	# shellcheck disable=SC2046
	res=$("$BIN/edgeid-sensor" pubsub --broker "127.0.0.1:$BPORT" --pairs "$PAIRS" --qos "$QOS" --size "$SIZE" \
		--duration "$DURATION" --sources $((2 * PAIRS)) $(creds "$kind" "$PROV/pubsub.tokens") 2>"$d/sensor.err") ||
		{ echo "$res" >&2; cat "$d/sensor.err" >&2; tail -20 "$d/broker.log" >&2; die "pubsub on $kind failed"; }
	t1=$(date +%s.%N)
	c1=$(cpu_ticks "$BPID")
	record test=pubsub kind="$kind" round="$r" broker_cpu_s="$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN { print (b - a) / t }')" \
		wall_s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" rss_kb="$(rss_kb "$BPID")" sensor="$res"
	stop "$BPID"
	say "pubsub $kind round $r: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%d delivered/s, %d sent/s" % (d["delivered_per_s"], d["sent_per_s"]))' "$res")"
}

idle_round() { # KIND N ROUND [tls]
	local kind=$1 n=$2 r=$3 tls=${4:-} d=$WORK/run/idle-$1-$2-$3${4:+-tls} rss0 rss1 file1 c0 c1 spid i line="" port ca
	start_broker "$kind" "$d"
	port=$BPORT
	ca=()
	if [ -n "$tls" ]; then
		port=$BTLSPORT
		case $kind in
		mochi) ca=(--tls-ca "$(mochi_tls_dir)/server.crt") ;;
		*) ca=(--tls-ca "$d/state/tls/server.crt") ;;
		esac
	fi
	sleep 1
	rss0=$(rss_kb "$BPID")
	if profiling "$kind"; then
		mkdir -p "$PPROF_DIR"
		grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$BPID/status" >"$PPROF_DIR/status0-$kind-$n${tls:+-tls}-$r.txt" || true
	fi
	if profiling "$kind" && [ -n "$PPROF_CPU" ]; then
		# the CPU profile of the connects (it maps more of the binary: the
		# RSS of a run with it is not the RSS of one without)
		curl -fsS -o "$PPROF_DIR/cpu-$kind-$n${tls:+-tls}-$r.pb.gz" "http://127.0.0.1:$BMETRICS/debug/pprof/profile?seconds=$((n / 2000 + 1))" &
	fi
	c0=$(cpu_ticks "$BPID")
	# shellcheck disable=SC2046
	"$BIN/edgeid-sensor" idle --broker "127.0.0.1:$port" --sessions "$n" --sources "$SOURCES" "${ca[@]}" \
		--concurrency "$CONCURRENCY" $(creds "$kind" "$PROV/idle.tokens") >"$d/sensor.out" 2>"$d/sensor.err" &
	spid=$!
	PIDS+=("$spid")
	for i in $(seq 1800); do
		line=$(head -n1 "$d/sensor.out" 2>/dev/null || true)
		[ -n "$line" ] && break
		kill -0 "$spid" 2>/dev/null || break
		sleep 0.1
	done
	c1=$(cpu_ticks "$BPID")
	[ -n "$line" ] || { cat "$d/sensor.err" >&2; die "idle on $kind: no report"; }
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(d["connected"] != d["sessions"])' "$line" ||
		{ echo "$line" >&2; cat "$d/sensor.err" >&2; tail -20 "$d/broker.log" >&2; die "idle on $kind: not all connected"; }
	sleep "$SETTLE"
	rss1=$(rss_kb "$BPID")
	file1=$(awk '/^RssFile:/ { print $2 }' "/proc/$BPID/status")
	if profiling "$kind"; then
		# /proc status as measured; then a GC (heap?gc=1), so that the
		# profile and the go_ metrics after it show what is live.
		mkdir -p "$PPROF_DIR"
		grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$BPID/status" >"$PPROF_DIR/status-$kind-$n${tls:+-tls}-$r.txt" || true
		cp "/proc/$BPID/smaps" "$PPROF_DIR/smaps-$kind-$n${tls:+-tls}-$r.txt" 2>/dev/null || true # RSS by mapping (binary, Badger's files)
		curl -fsS -o "$PPROF_DIR/goroutines-$kind-$n${tls:+-tls}-$r.txt" "http://127.0.0.1:$BMETRICS/debug/pprof/goroutine?debug=1" || true
		curl -fsS -o "$PPROF_DIR/heap-$kind-$n${tls:+-tls}-$r.pb.gz" "http://127.0.0.1:$BMETRICS/debug/pprof/heap?gc=1" || true
		curl -fsS "http://127.0.0.1:$BMETRICS/metrics" | grep -E '^go_(memstats|gc|goroutines|threads)' >"$PPROF_DIR/go-$kind-$n${tls:+-tls}-$r.txt" || true
	fi
	stop "$spid"
	record test=idle kind="$kind" n="$n" round="$r" tls="${tls:+1}" rss0_kb="$rss0" rss_kb="$rss1" rss_file_kb="$file1" \
		connect_cpu_s="$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN { print (b - a) / t }')" sensor="$line" \
		end="$(sed -n 2p "$d/sensor.out")"
	stop "$BPID"
	say "idle $kind $n${tls:+ TLS} round $r: RSS $((rss0 / 1024)) -> $((rss1 / 1024)) MiB, $(python3 -c 'import json,sys; print("%d connects/s" % json.loads(sys.argv[1])["connects_per_s"])' "$line")"
}

reconnect_round() { # KIND N ROUND
	local kind=$1 n=$2 r=$3 d=$WORK/run/reconnect-$1-$2-$3 out
	start_broker "$kind" "$d"
	sleep 1
	local cpid=""
	if profiling "$kind" && [ -n "$PPROF_CPU" ]; then
		mkdir -p "$PPROF_DIR" # both passes and the disconnects between them (waited for below)
		curl -fsS -o "$PPROF_DIR/cpu-reconnect-$kind-$n-$r.pb.gz" "http://127.0.0.1:$BMETRICS/debug/pprof/profile?seconds=$((n / 2500 + 1))" &
		cpid=$!
	fi
	# shellcheck disable=SC2046
	out=$("$BIN/edgeid-sensor" idle --broker "127.0.0.1:$BPORT" --sessions "$n" --sources "$SOURCES" --reconnect --hold 1ms \
		--concurrency "$CONCURRENCY" $(creds "$kind" "$PROV/idle.tokens") 2>"$d/sensor.err") ||
		{ echo "$out" >&2; cat "$d/sensor.err" >&2; tail -20 "$d/broker.log" >&2; die "reconnect on $kind failed"; }
	[ -z "$cpid" ] || wait "$cpid" || true
	stop "$BPID"
	record test=reconnect kind="$kind" n="$n" round="$r" first="$(sed -n 1p <<<"$out")" second="$(sed -n 2p <<<"$out")"
	say "reconnect $kind $n round $r: $(python3 -c 'import json,sys; a, b = (json.loads(x) for x in sys.argv[1:]); print("%d then %d connects/s" % (a["connects_per_s"], b["connects_per_s"]))' "$(sed -n 1p <<<"$out")" "$(sed -n 2p <<<"$out")")"
}

# Rounds outermost, brokers inside: the machine's drift spreads over all.
for r in $(seq "$ROUNDS"); do
	for kind in $BROKERS; do pubsub_round "$kind" "$r"; done
done
for n in $SESSIONS; do
	for r in $(seq "$ROUNDS"); do
		for kind in $BROKERS; do idle_round "$kind" "$n" "$r"; done
	done
done
for n in $RECONNECT_SESSIONS; do
	for r in $(seq "$ROUNDS"); do
		for kind in $BROKERS; do reconnect_round "$kind" "$n" "$r"; done
	done
done
for n in $TLS_SESSIONS; do
	for r in $(seq "$ROUNDS"); do
		for kind in $BROKERS; do
			case $kind in mosquitto | mochi-before) continue ;; esac
			[ "$kind" != mochi ] || [ -n "$(mochi_tls_dir)" ] || continue
			idle_round "$kind" "$n" "$r" tls
		done
	done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average at the end: $LOAD_END; $(($(date +%s) - STARTED)) s in all"

# --- tables ----------------------------------------------------------------------
python3 - "$RESULTS" "$BROKERS" "${BEFORE_REV:0:12}" "$AFTER_DESC" "$LOAD_START" "$LOAD_END" "$PAIRS" "$QOS" "$SIZE" "$DURATION" "$SOURCES" "$EDGEID_ENV" <<'EOF' | tee ${OUT:+"$OUT"}
import json, os, statistics, sys
path, brokers, before, after, load0, load1, pairs, qos, size, duration, sources, edgeid_env = sys.argv[1:]
brokers = brokers.split()
rows = [json.loads(l) for l in open(path)]
for r in rows:
    for k in ("sensor", "end", "first", "second"):
        if isinstance(r.get(k), str):
            r[k] = json.loads(r[k]) if r[k] else {}
title = {"mochi": "mochi, no hooks", "mochi-before": "mochi at %s, no hooks" % before, "mosquitto": "Mosquitto, passwd + ACL",
         "before": "EdgeID before (%s)" % before, "after": "EdgeID after (%s)" % after}

def med(xs):
    return statistics.median(xs) if xs else None

def fmt(x, unit=""):
    if x is None:
        return "—"
    return ("{:,.0f}".format(x) if x >= 100 else "{:.1f}".format(x)) + unit

def cell(xs, unit=""):
    if not xs:
        return "—"
    return "**%s** (%s)" % (fmt(med(xs), unit), " / ".join(fmt(x) for x in xs))

def table(lines):
    print("| | " + " | ".join(title[b] for b in brokers) + " |")
    print("|---" * (len(brokers) + 1) + "|")
    for name, f in lines:
        print("| %s | %s |" % (name, " | ".join(f(b) for b in brokers)))

print("Load average %s at the start, %s at the end.\n" % (load0, load1))
if edgeid_env:
    print("EdgeID run with %s on top of its shipped configuration.\n" % edgeid_env)
ps = lambda b: [r for r in rows if r["test"] == "pubsub" and r["kind"] == b]
print("Table 1: %s pairs, QoS %s, %s-byte payloads, publishers sending as fast as the broker takes it for %s; median **in bold** (the rounds)\n" % (pairs, qos, size, duration))
table([
    ("delivered msg/s", lambda b: cell([r["sensor"]["delivered_per_s"] for r in ps(b)])),
    ("sent msg/s", lambda b: cell([r["sensor"]["sent_per_s"] for r in ps(b)])),
    ("delivered / sent, all (after the backlog)", lambda b: fmt(med([100.0 * r["sensor"]["delivered"] / max(1, r["sensor"]["sent"]) for r in ps(b)]), " %")),
    # CPU time over first PUBLISH to last delivery (the connects' share is small).
    ("broker CPU, cores of %d" % os.cpu_count(), lambda b: "%.2f" % med([r["broker_cpu_s"] / r["sensor"]["elapsed_s"] for r in ps(b)])),
    ("load generator CPU, cores", lambda b: "%.2f" % med([r["sensor"]["client_cpu_s"] / r["sensor"]["elapsed_s"] for r in ps(b)])),
])
idle = lambda b, n: [r for r in rows if r["test"] == "idle" and r["kind"] == b and r["n"] == n and not r.get("tls")]
idle_tls = lambda b, n: [r for r in rows if r["test"] == "idle" and r["kind"] == b and r["n"] == n and r.get("tls")]
ns = sorted({r["n"] for r in rows if r["test"] == "idle" and not r.get("tls")})
ns_tls = sorted({r["n"] for r in rows if r["test"] == "idle" and r.get("tls")})
recon = lambda b, n: [r for r in rows if r["test"] == "reconnect" and r["kind"] == b and r["n"] == n]
ns_recon = sorted({r["n"] for r in rows if r["test"] == "reconnect"})
lines = [("RSS before any session, MiB (every idle run)", lambda b: cell([r["rss0_kb"] / 1024 for r in rows if r["test"] == "idle" and r["kind"] == b]))]
for n in ns:
    lines.append(("RSS, {:,} sessions, MiB".format(n), lambda b, n=n: cell([r["rss_kb"] / 1024 for r in idle(b, n)])))
for n in ns_tls:
    lines.append(("RSS, {:,} TLS sessions, MiB".format(n), lambda b, n=n: cell([r["rss_kb"] / 1024 for r in idle_tls(b, n)])))
for n in ns:
    lines.append(("of which file-backed (the binary's pages), {:,} sessions, MiB".format(n), lambda b, n=n: cell([r["rss_file_kb"] / 1024 for r in idle(b, n)])))
for n in ns:
    lines.append(("connects/s, {:,} sessions".format(n), lambda b, n=n: cell([r["sensor"]["connects_per_s"] for r in idle(b, n)])))
for n in ns_recon:
    lines.append(("reconnects/s, {:,} sessions back at once (same credentials)".format(n), lambda b, n=n: cell([r["second"]["connects_per_s"] for r in recon(b, n)])))
for n in ns_tls:
    lines.append(("connects/s, {:,} TLS sessions".format(n), lambda b, n=n: cell([r["sensor"]["connects_per_s"] for r in idle_tls(b, n)])))
for n in ns:
    lines.append(("broker CPU per connect, µs, {:,} sessions".format(n), lambda b, n=n: cell([r["connect_cpu_s"] * 1e6 / n for r in idle(b, n)])))
lost = sum(r.get("end", {}).get("lost", 0) for r in rows if r["test"] == "idle")
if ns or ns_tls or ns_recon:
    print("\nTable 2: idle MQTT 5 sessions from %s loopback addresses; RSS (VmRSS, MiB) with all connected; median **in bold** (the rounds)\n" % sources)
    table(lines)
    print("\nSessions the brokers dropped while held: %d." % lost)
else:
    print()
if "mochi" in brokers and "mochi-before" in brokers:
    mb = med([r["sensor"]["delivered_per_s"] for r in ps("mochi-before")])
    ma = med([r["sensor"]["delivered_per_s"] for r in ps("mochi")])
    print("mochi after / mochi before: delivered msg/s %.2f×." % (ma / mb))
if "before" in brokers and "after" in brokers:
    eb = med([r["sensor"]["delivered_per_s"] for r in ps("before")])
    ea = med([r["sensor"]["delivered_per_s"] for r in ps("after")])
    print("EdgeID after / EdgeID before: delivered msg/s %.2f×." % (ea / eb))
if "mochi" in brokers and "after" in brokers:
    m = med([r["sensor"]["delivered_per_s"] for r in ps("mochi")])
    e = med([r["sensor"]["delivered_per_s"] for r in ps("after")])
    out = ["EdgeID after / mochi: delivered msg/s %.2f× (goal ≥ 0.9×)" % (e / m)]
    for n in ns:
        mc = med([r["sensor"]["connects_per_s"] for r in idle("mochi", n)])
        ec = med([r["sensor"]["connects_per_s"] for r in idle("after", n)])
        er = med([r["rss_kb"] / 1024 for r in idle("after", n)])
        out.append("{:,} sessions: connects/s {:.2f}×, RSS {:.0f} MiB".format(n, ec / mc, er))
    for n in ns_recon:
        mr = med([r["second"]["connects_per_s"] for r in recon("mochi", n)])
        er = med([r["second"]["connects_per_s"] for r in recon("after", n)])
        if mr and er:
            out.append("reconnect storm of {:,}: {:.2f}×".format(n, er / mr))
    print("; ".join(out) + (" (goals: connects/s ≥ 0.9×, 1,000 ≤ 40 MB, 10,000 ≤ 150 MB, read as MiB)." if ns else "."))
EOF
