#!/usr/bin/env bash
# `make bench`: meshd pushing a synthetic mesh (1,000 services in 100 namespaces, 2,000 pods) to
# 2,000 simulated sidecars in a separate process, next to a baseline measured in the same run.
#
# Each round (MESHD_BENCH_ROUNDS, default 3) runs both, one after the other, so machine noise hits
# them alike:
#   meshd     a fresh `meshd serve` on the generated mesh: startup and idle cost; then 2,000 SotW
#             clients (meshd-loadgen, one per pod, each on its own connection) until every one has
#             ACKed CDS, EDS, LDS and RDS; then two re-pushes, each timed until every client ACKed
#             it: one more endpoint (an Endpoints edit) and one more Service.
#   baseline  `meshd-loadgen replay`: the responses client 0 got from meshd in this round, served
#             as they are to the same 2,000 clients. Same bytes, same client work, no control plane.
# Then once each, against a fresh meshd:
#   delta       Delta xDS (with the re-pushes);
#   one         one client (cold caches, no contention);
#   isolation   the same mesh with a `Sidecar` per namespace (egress: the namespace and
#               istio-system), 2,000 SotW clients, then VirtualService edits (each reaches the 20
#               sidecars of its namespace);
#   churn       SotW and Delta, 2,000 clients, no isolation: MESHD_BENCH_EDITS (10) VirtualService
#               edits one after the other (each reaches every client), then MESHD_BENCH_CHURN_RATE
#               (50) endpoint changes per second for MESHD_BENCH_CHURN_SECS (60) s, each timed from
#               its file write until every client ACKed it;
#   storm       MESHD_BENCH_STORM_PODS_PER_SERVICE (10) pods per service (10,000 clients) with
#               isolation, all connecting at once: plaintext, then TLS with secrets (SDS), each
#               client connecting from its pod's own loopback address (the file source's proof);
#   replicas    two meshd replicas on the same mesh (4 pods per service: 4,000 clients, isolation),
#               clients split between them; the first is killed and its clients move to the other;
#   throughput  meshd-xds's serving path against tonic's generated server, same bytes (example);
#   issuance    the CA's mint and CSR signing against raw P-256 signing and verifying (example);
#   envoys      real Envoys (scripts/bench_envoys.py);
#   telemetry   the rounds' initial push with Istio's metrics off (`defaultProviders.metrics: []`):
#               what the standard metrics cost in config, meshd CPU and memory.
# MESHD_BENCH_ONLY (space-separated step names: rounds delta one isolation churn storm replicas
# throughput issuance envoys telemetry; default all) picks steps; `make bench-check` runs a short selection.
# The report is scripts/bench_report.py's.
#
# Prints a table and writes it as a dated section of BENCHMARKS.md (a section for the same date
# and commit is replaced). Everything listens on 127.0.0.1 only.
#
# Knobs (environment): MESHD_BENCH_ROUNDS (3), MESHD_BENCH_CLIENTS (0 = one per pod),
# MESHD_BENCH_NAMESPACES / _SERVICES_PER_NAMESPACE / _PODS_PER_SERVICE (100/10/2),
# MESHD_BENCH_XDS_PORT / _SECURE_PORT / _DEBUG_PORT / _REPLAY_PORT (default: the first free of
# 27010/27012/27014/27020, 27110/..., below the kernel's ephemeral range, where 4,000 client
# sockets would collide with them),
# MESHD_BENCH_MESHD (the meshd binary to measure; default the release build),
# MESHD_BENCH_WRITE (1: update BENCHMARKS.md and scripts/bench-figures.json; 0: only print),
# MESHD_BENCH_FIGURES_OUT (also write the headline figures there), MESHD_BENCH_KEEP (1: keep the
# work directory), MESHD_BENCH_BUILD (0: use the binaries already built),
# CARGO_TARGET_DIR ($HOME/.cache/meshd/target).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshd/target}"
CARGO="${CARGO:-cargo}"
ROUNDS="${MESHD_BENCH_ROUNDS:-3}"
CLIENTS="${MESHD_BENCH_CLIENTS:-0}"
WRITE="${MESHD_BENCH_WRITE:-1}"
KEEP="${MESHD_BENCH_KEEP:-0}"
BIN="$CARGO_TARGET_DIR/release"
CLK_TCK="$(getconf CLK_TCK)"
# meshd runs with its default logging (info), as deployed.
export RUST_BACKTRACE=0

log() { echo "bench: $*" >&2; }
die() {
    log "$*"
    exit 1
}

for tool in curl python3 getconf; do
    command -v "$tool" >/dev/null || die "needs $tool (make test-deps installs it)"
done

# Each client holds a socket in the loadgen and one in the server.
PODS=$((${MESHD_BENCH_NAMESPACES:-100} * ${MESHD_BENCH_SERVICES_PER_NAMESPACE:-10} * ${MESHD_BENCH_PODS_PER_SERVICE:-2}))
N_CLIENTS=$((CLIENTS > 0 ? CLIENTS : PODS))
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= N_CLIENTS + 256)) || die "open-file limit $(ulimit -n) is too low for $N_CLIENTS clients"

if [[ "${MESHD_BENCH_BUILD:-1}" == 1 ]]; then
    log "building (release): meshd, meshd-loadgen, meshd-synth"
    "$CARGO" build --release --quiet -p meshd -p meshd-tests --bins
    "$CARGO" build --release --quiet -p meshd-xds --example push_throughput
    "$CARGO" build --release --quiet -p meshd-ca --example issuance_bench
fi
ONLY="${MESHD_BENCH_ONLY:-rounds delta one isolation churn storm replicas throughput issuance envoys telemetry}"
# Further `meshd serve` flags for a step.
SERVE_FLAGS=()
step() { [[ " $ONLY " == *" $1 "* ]]; }
for bin in meshd meshd-loadgen meshd-synth; do
    [[ -x "$BIN/$bin" ]] || die "$BIN/$bin missing: build without MESHD_BENCH_BUILD=0"
done
# The meshd under test (MESHD_BENCH_MESHD: another build, e.g. an unoptimised one for bench-check).
MESHD="${MESHD_BENCH_MESHD:-$BIN/meshd}"
[[ -x "$MESHD" ]] || die "$MESHD is not an executable"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meshd-bench.XXXXXX")"
MESH="$WORK/mesh"
cleanup() {
    # Only this shell's own background jobs that are still running (meshd, the replay server).
    local pid
    for pid in $(jobs -p); do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [[ "$KEEP" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf -- "$WORK"
    fi
}
trap cleanup EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The first free set (xDS, TLS xDS, debug, replay) at 27010 + 100·k, unless set explicitly.
for base in 27010 27110 27210 27310 27410 27510 27610 27710 27810 27910; do
    XDS_PORT="${MESHD_BENCH_XDS_PORT:-$base}"
    SECURE_PORT="${MESHD_BENCH_SECURE_PORT:-$((base + 2))}"
    DEBUG_PORT="${MESHD_BENCH_DEBUG_PORT:-$((base + 4))}"
    REPLAY_PORT="${MESHD_BENCH_REPLAY_PORT:-$((base + 10))}"
    WEBHOOK_PORT=$((base + 6))
    # The second replica's xDS, TLS xDS, debug and webhook ports.
    REPLICA_PORTS=($((base + 50)) $((base + 52)) $((base + 54)) $((base + 56)))
    busy=0
    for port in "$XDS_PORT" "$SECURE_PORT" "$DEBUG_PORT" "$REPLAY_PORT" "$WEBHOOK_PORT" "${REPLICA_PORTS[@]}"; do
        if port_busy "$port"; then busy=1; fi
    done
    ((busy == 0)) && break
done
((busy == 0)) || die "ports $XDS_PORT/$SECURE_PORT/$DEBUG_PORT/$REPLAY_PORT are in use; set MESHD_BENCH_*_PORT"
log "ports (127.0.0.1): xDS $XDS_PORT, TLS xDS $SECURE_PORT, debug $DEBUG_PORT, replay $REPLAY_PORT"

now() { date +%s.%N; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# Stops a process we started, politely first.
stop() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Starts `meshd serve` on $MESH with xDS, TLS xDS, debug and webhook ports $1–$4, logging to $5;
# sets SERVED_PID once /ready answers, and READY_AT to when. All replicas share $WORK/ca.
serve_meshd() {
    local log_file="$5"
    "$MESHD" serve --config-dir "$MESH" --ca-dir "$WORK/ca" \
        --xds-addr "127.0.0.1:$1" --secure-addr "127.0.0.1:$2" \
        --debug-addr "127.0.0.1:$3" --webhook-addr "127.0.0.1:$4" ${SERVE_FLAGS[@]+"${SERVE_FLAGS[@]}"} \
        >"$log_file" 2>&1 &
    SERVED_PID=$!
    READY_AT=""
    for _ in $(seq 1200); do
        if curl -sf "http://127.0.0.1:$3/ready" >/dev/null 2>&1; then
            READY_AT="$(now)"
            break
        fi
        kill -0 "$SERVED_PID" 2>/dev/null || die "meshd exited; see $log_file"
        sleep 0.05
    done
    [[ -n "$READY_AT" ]] || die "meshd not ready after 60s"
}

# Writes a fresh mesh (the re-push changes edit it; its shape from the MESHD_BENCH_* environment)
# and starts meshd on it. Sets MESHD_PID and writes startup/idle measurements to $1.
start_meshd() {
    local facts="$1" log_file="$2"
    rm -rf -- "$MESH"
    "$BIN/meshd-synth" --out "$MESH" >/dev/null
    local t0
    t0="$(now)"
    serve_meshd "$XDS_PORT" "$SECURE_PORT" "$DEBUG_PORT" "$WEBHOOK_PORT" "$log_file"
    MESHD_PID=$SERVED_PID
    local ready="$READY_AT"
    local ready_cpu ready_rss
    ready_cpu="$(cpu_ticks "$MESHD_PID")"
    ready_rss="$(status_kib "$MESHD_PID" VmRSS)"
    # Idle: the mesh loaded, nobody connected.
    sleep 1
    local idle_a idle_b
    idle_a="$(cpu_ticks "$MESHD_PID")"
    sleep 5
    idle_b="$(cpu_ticks "$MESHD_PID")"
    python3 - "$facts" <<EOF
import json, sys
json.dump({
    "startup_s": round($ready - $t0, 3),
    "startup_cpu_s": $ready_cpu / $CLK_TCK,
    "ready_rss_mib": round($ready_rss / 1024, 1),
    "idle_rss_mib": round($(status_kib "$MESHD_PID" VmRSS) / 1024, 1),
    "idle_cpu_fraction": round(($idle_b - $idle_a) / $CLK_TCK / 5, 3),
}, open(sys.argv[1], "w"))
EOF
}

# meshd-loadgen against 127.0.0.1:$1 (several ports, comma-separated: replicas), sampling pid $2;
# output JSON to $3; further flags after.
loadgen() {
    local ports="$1" pid="$2" out="$3"
    shift 3
    local status=0
    "$BIN/meshd-loadgen" --xds-addr "127.0.0.1:${ports//,/,127.0.0.1:}" --clients "$CLIENTS" \
        --server-pid "$pid" --clk-tck "$CLK_TCK" "$@" >"$out" 2>"$out.err" || status=$?
    sed 's/^/  /' "$out.err" >&2
    if ((status != 0)); then
        log "meshd-loadgen failed ($status); see $out"
        FAILED=1
    fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
FAILED=0
step rounds || ROUNDS=0
for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: meshd"
    start_meshd "$WORK/r$round-meshd-facts.json" "$WORK/r$round-meshd.log"
    loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/r$round-meshd.json" \
        --record "$WORK/record.bin" --mesh-dir "$MESH" --change endpoint --change service
    stop "$MESHD_PID"

    log "round $round/$ROUNDS: baseline (replay of client 0's responses)"
    "$BIN/meshd-loadgen" replay --from "$WORK/record.bin" --listen "127.0.0.1:$REPLAY_PORT" \
        2>"$WORK/r$round-replay.log" &
    REPLAY_PID=$!
    for _ in $(seq 100); do
        port_busy "$REPLAY_PORT" && break
        sleep 0.05
    done
    loadgen "$REPLAY_PORT" "$REPLAY_PID" "$WORK/r$round-replay.json"
    stop "$REPLAY_PID"
done

if step delta; then
    log "Delta xDS: meshd"
    start_meshd "$WORK/delta-facts.json" "$WORK/delta-meshd.log"
    loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/delta.json" \
        --delta --mesh-dir "$MESH" --change endpoint --change service
    stop "$MESHD_PID"
fi

if step one; then
    log "one client: meshd"
    start_meshd "$WORK/one-facts.json" "$WORK/one-meshd.log"
    # (`CLIENTS=1` applies to this call only.)
    CLIENTS=1 loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/one.json" --settle-ms 500
    stop "$MESHD_PID"
fi

EDITS="${MESHD_BENCH_EDITS:-10}"
if step isolation; then
    log "namespace isolation: meshd"
    export MESHD_BENCH_ISOLATION=true
    start_meshd "$WORK/isolation-facts.json" "$WORK/isolation-meshd.log"
    loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/isolation.json" --mesh-dir "$MESH" --edits "$EDITS"
    stop "$MESHD_PID"
    unset MESHD_BENCH_ISOLATION
fi

if step churn; then
    for mode in sotw delta; do
        log "churn ($mode): meshd"
        start_meshd "$WORK/churn-$mode-facts.json" "$WORK/churn-$mode-meshd.log"
        flags=(--mesh-dir "$MESH" --edits "$EDITS" --churn-rate "${MESHD_BENCH_CHURN_RATE:-50}"
            --churn-secs "${MESHD_BENCH_CHURN_SECS:-60}")
        if [[ "$mode" == delta ]]; then flags+=(--delta); fi
        loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/churn-$mode.json" "${flags[@]}"
        stop "$MESHD_PID"
    done
fi

if step storm; then
    # 10,000 clients (by default), every one connecting at once; each from its own pod address.
    export MESHD_BENCH_ISOLATION=true MESHD_BENCH_LOOPBACK_PODS=true
    export MESHD_BENCH_PODS_PER_SERVICE="${MESHD_BENCH_STORM_PODS_PER_SERVICE:-10}"
    STORM_CLIENTS=$((${MESHD_BENCH_NAMESPACES:-100} * ${MESHD_BENCH_SERVICES_PER_NAMESPACE:-10} * MESHD_BENCH_PODS_PER_SERVICE))
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    (($(ulimit -n) >= STORM_CLIENTS + 256)) || die "open-file limit $(ulimit -n) is too low for $STORM_CLIENTS clients"
    log "storm ($STORM_CLIENTS clients, plaintext): meshd"
    start_meshd "$WORK/storm-plain-facts.json" "$WORK/storm-plain-meshd.log"
    CLIENTS=0 loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/storm-plain.json" --ramp "$STORM_CLIENTS"
    stop "$MESHD_PID"
    log "storm ($STORM_CLIENTS clients, TLS and SDS): meshd"
    start_meshd "$WORK/storm-tls-facts.json" "$WORK/storm-tls-meshd.log"
    CLIENTS=0 loadgen "$SECURE_PORT" "$MESHD_PID" "$WORK/storm-tls.json" \
        --ramp "$STORM_CLIENTS" --tls-root "$WORK/ca/root-cert.pem"
    stop "$MESHD_PID"
    unset MESHD_BENCH_ISOLATION MESHD_BENCH_LOOPBACK_PODS MESHD_BENCH_PODS_PER_SERVICE
fi

if step replicas; then
    export MESHD_BENCH_ISOLATION=true MESHD_BENCH_PODS_PER_SERVICE=4
    log "replicas: two meshd, the first killed"
    start_meshd "$WORK/replicas-facts.json" "$WORK/replica-a.log"
    serve_meshd "${REPLICA_PORTS[@]}" "$WORK/replica-b.log"
    REPLICA_B=$SERVED_PID
    # The survivor is sampled.
    CLIENTS=0 loadgen "$XDS_PORT,${REPLICA_PORTS[0]}" "$REPLICA_B" "$WORK/replicas.json" \
        --kill-pid "$MESHD_PID"
    wait "$MESHD_PID" 2>/dev/null || true
    stop "$REPLICA_B"
    unset MESHD_BENCH_ISOLATION MESHD_BENCH_PODS_PER_SERVICE
fi

if step throughput; then
    log "push throughput: meshd-xds against tonic (example)"
    "$CARGO_TARGET_DIR/release/examples/push_throughput" 500 3 >"$WORK/throughput.txt" 2>&1 ||
        { log "push_throughput failed"; FAILED=1; }
    sed 's/^/  /' "$WORK/throughput.txt" >&2
fi

if step issuance; then
    log "CA issuance (example)"
    "$CARGO_TARGET_DIR/release/examples/issuance_bench" 2 >"$WORK/issuance.json" ||
        { log "issuance_bench failed"; FAILED=1; }
fi

if step envoys && [[ "${MESHD_BENCH_ENVOYS:-30}" != 0 ]]; then
    log "real Envoys"
    python3 "$REPO/scripts/bench_envoys.py" --meshd "$MESHD" --envoys "${MESHD_BENCH_ENVOYS:-30}" \
        --json "$WORK/envoys.json" >"$WORK/envoys.md" || { log "bench_envoys failed"; FAILED=1; }
fi

if step telemetry; then
    log "Istio's metrics off: meshd"
    printf 'defaultProviders:\n  metrics: []\n' >"$WORK/no-metrics.yaml"
    SERVE_FLAGS=(--mesh-config "$WORK/no-metrics.yaml")
    start_meshd "$WORK/no-metrics-facts.json" "$WORK/no-metrics-meshd.log"
    loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/no-metrics.json"
    stop "$MESHD_PID"
    SERVE_FLAGS=()
fi

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT+dirty"; fi

# The knobs this run was given, for the report's command line.
export MESHD_BENCH_KNOBS
MESHD_BENCH_KNOBS="$(env | grep -E '^MESHD_(BENCH|DEBOUNCE)_' | grep -vE '^MESHD_BENCH_(KNOBS|FIGURES_OUT|WRITE|KEEP|BUILD)=' | sort | tr '\n' ' ')"
python3 "$REPO/scripts/bench_report.py" "$WORK" "$ROUNDS" "$REPO/BENCHMARKS.md" "$WRITE" "$COMMIT" \
    "$FAILED" "$LOAD_BEFORE" "$LOAD_AFTER" "$REPO/scripts/bench-figures.json" "${MESHD_BENCH_FIGURES_OUT:-}"
