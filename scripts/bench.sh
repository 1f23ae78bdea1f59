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
# Then once: Delta xDS against a fresh meshd (with the re-pushes), and one client against a fresh
# meshd (cold caches, no contention).
#
# Prints a table and writes it as a dated section of BENCHMARKS.md (a section for the same date
# and commit is replaced). Everything listens on 127.0.0.1 only.
#
# Knobs (environment): MESHD_BENCH_ROUNDS (3), MESHD_BENCH_CLIENTS (0 = one per pod),
# MESHD_BENCH_NAMESPACES / _SERVICES_PER_NAMESPACE / _PODS_PER_SERVICE (100/10/2),
# MESHD_BENCH_XDS_PORT / _SECURE_PORT / _DEBUG_PORT / _REPLAY_PORT (default: the first free of
# 27010/27012/27014/27020, 27110/..., below the kernel's ephemeral range, where 4,000 client
# sockets would collide with them),
# MESHD_BENCH_WRITE (1: update BENCHMARKS.md; 0: only print), MESHD_BENCH_KEEP (1: keep the
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
fi
for bin in meshd meshd-loadgen meshd-synth; do
    [[ -x "$BIN/$bin" ]] || die "$BIN/$bin missing: build without MESHD_BENCH_BUILD=0"
done

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
    busy=0
    for port in "$XDS_PORT" "$SECURE_PORT" "$DEBUG_PORT" "$REPLAY_PORT"; do
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

# Writes a fresh mesh (the re-push changes edit it) and starts meshd on it. Sets MESHD_PID and
# writes startup/idle measurements to $1.
start_meshd() {
    local facts="$1" log_file="$2"
    "$BIN/meshd-synth" --out "$MESH" >/dev/null
    local t0
    t0="$(now)"
    "$BIN/meshd" serve --config-dir "$MESH" --ca-dir "$WORK/ca" \
        --xds-addr "127.0.0.1:$XDS_PORT" --secure-addr "127.0.0.1:$SECURE_PORT" \
        --debug-addr "127.0.0.1:$DEBUG_PORT" >"$log_file" 2>&1 &
    MESHD_PID=$!
    local ready=""
    for _ in $(seq 1200); do
        if curl -sf "http://127.0.0.1:$DEBUG_PORT/ready" >/dev/null 2>&1; then
            ready="$(now)"
            break
        fi
        kill -0 "$MESHD_PID" 2>/dev/null || die "meshd exited; see $log_file"
        sleep 0.05
    done
    [[ -n "$ready" ]] || die "meshd not ready after 60s"
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

# meshd-loadgen against 127.0.0.1:$1, sampling pid $2; output JSON to $3; further flags after.
loadgen() {
    local port="$1" pid="$2" out="$3"
    shift 3
    local status=0
    "$BIN/meshd-loadgen" --xds-addr "127.0.0.1:$port" --clients "$CLIENTS" \
        --server-pid "$pid" --clk-tck "$CLK_TCK" "$@" >"$out" 2>"$out.err" || status=$?
    sed 's/^/  /' "$out.err" >&2
    if ((status != 0)); then
        log "meshd-loadgen failed ($status); see $out"
        FAILED=1
    fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
FAILED=0
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

log "Delta xDS: meshd"
start_meshd "$WORK/delta-facts.json" "$WORK/delta-meshd.log"
loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/delta.json" \
    --delta --mesh-dir "$MESH" --change endpoint --change service
stop "$MESHD_PID"

log "one client: meshd"
start_meshd "$WORK/one-facts.json" "$WORK/one-meshd.log"
# (`CLIENTS=1` applies to this call only.)
CLIENTS=1 loadgen "$XDS_PORT" "$MESHD_PID" "$WORK/one.json" --settle-ms 500
stop "$MESHD_PID"

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]]; then COMMIT="$COMMIT+dirty"; fi

python3 - "$WORK" "$ROUNDS" "$REPO/BENCHMARKS.md" "$WRITE" "$COMMIT" "$FAILED" \
    "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import datetime, json, os, platform, re, statistics, sys

work, rounds, out_path, write, commit, failed, load_before, load_after = sys.argv[1:9]
rounds, write, failed = int(rounds), write == "1", failed == "1"

def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

meshd = [load(f"r{r}-meshd.json") for r in range(1, rounds + 1)]
replay = [load(f"r{r}-replay.json") for r in range(1, rounds + 1)]
facts = [load(f"r{r}-meshd-facts.json") for r in range(1, rounds + 1)]
delta, delta_facts, one = load("delta.json"), load("delta-facts.json"), load("one.json")
if not all(meshd) or not all(replay):
    sys.exit("bench: a run produced no result; nothing written")

def get(d, path):
    for k in path.split("."):
        d = d[k] if isinstance(d, dict) else d[int(k)]
    return d

def vals(runs, path):
    return [get(r, path) for r in runs if r is not None]

def med(runs, path):
    v = vals(runs, path)
    return statistics.median(v) if v else float("nan")

class Unit:
    """A number format and its unit; ranges print the unit once."""

    def __init__(self, num, unit):
        self.num, self.unit = num, unit

    def __call__(self, x):
        return f"{self.num(x)}{self.unit}"


def spread(runs, path, fmt):
    v = vals(runs, path)
    if len(v) < 2:
        return fmt(v[0]) if v else "—"
    return f"{fmt(statistics.median(v))} ({fmt.num(min(v))}–{fmt.num(max(v))})"


s = Unit(lambda x: f"{x:.2f}", " s")
cpu = Unit(lambda x: f"{x:.2f}", " CPU-s")
mib = Unit(lambda x: f"{x:,.0f}", " MiB")
gb = Unit(lambda x: f"{x / 1e9:.2f}", " GB")
mb = Unit(lambda x: f"{x / 1e6:.0f}", " MB")
millions = Unit(lambda x: f"{x / 1e6:.2f}", " M")
pct = Unit(lambda x: f"{100 * x:.0f}", " %")
count = Unit(lambda x: f"{x:g}", "")
ratio = lambda a, b: f"{a / b:.2f}×" if b else "—"


def types(result):
    by = result["received"]["by_type"]
    return ", ".join(f"{k} {v['responses']}" for k, v in by.items() if v["responses"])

cpu_model = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
m0 = meshd[0]
today = datetime.date.today().isoformat()
L = []
L.append(f"## make bench — {today}, commit {commit}")
L.append("")
L.append(f"Command: `make bench` (release build, then `scripts/bench.sh`; {rounds} rounds). "
         f"Machine: {os.cpu_count()} × {cpu_model}, {mem_gib:.0f} GiB, Linux {platform.release()}; "
         "meshd (or the baseline) and the clients share these cores, and other work on the "
         f"machine shares them too: load average {load_before} before, {load_after} after.")
shape = m0["shape"]
L.append(f"Mesh (`meshd-synth`): {m0['services']} services in {shape['namespaces']} namespaces "
         "(http 8080 on every service, grpc 9090 on a tenth, tcp 9000 on a fifth), "
         f"{m0['pods']} pods ({shape['pods_per_service']} per service), Endpoints for every "
         f"service; {m0['clients']} clients, one per pod, each on its own connection.")
L.append("")
L.append(f"### Initial push, {m0['clients']} SotW clients — median of {rounds} rounds (min–max)")
L.append("")
L.append("| | meshd | baseline: replay | meshd / baseline |")
L.append("|---|---|---|---|")
def row(label, path, fmt, with_ratio=True):
    r = ratio(med(meshd, path), med(replay, path)) if with_ratio else "—"
    L.append(f"| {label} | {spread(meshd, path, fmt)} | {spread(replay, path, fmt)} | {r} |")
row("until every client ACKed CDS, EDS, LDS, RDS", "initial.all_acked_s", s)
row("per client, p50", "initial.p50_s", s)
row("per client, p99", "initial.p99_s", s)
row("server CPU, first connect → 2 s after the last ACK", "initial.usage.server_cpu_s", cpu)
row("server RSS after the push (VmRSS)", "initial.usage.server_end.rss_mib", mib)
row("server peak RSS (VmHWM)", "initial.usage.server_end.hwm_mib", mib)
row("client-side CPU (decode + ACK)", "initial.usage.loadgen_cpu_s", cpu)
row("bytes received by all clients", "initial.received.bytes", gb)
row("resources received by all clients", "initial.received.resources", millions)
row("streams the server closed (client reconnected)", "initial.reconnects", count, False)
L.append("")
L.append("Baseline: the same clients against `meshd-loadgen replay`, which answers every request "
         "with the responses client 0 recorded from meshd in the same round — same bytes and "
         "client work, but no index, translation, diffing or per-proxy state.")
L.append("")
L.append("### meshd with the mesh loaded and no clients")
L.append("")
L.append("| | median (min–max) |")
L.append("|---|---|")
L.append(f"| startup until `/ready` | {spread(facts, 'startup_s', s)} |")
L.append(f"| CPU until `/ready` | {spread(facts, 'startup_cpu_s', cpu)} |")
L.append(f"| RSS, idle | {spread(facts, 'idle_rss_mib', mib)} |")
L.append(f"| CPU while idle (share of one core) | {spread(facts, 'idle_cpu_fraction', pct)} |")
L.append("")
L.append(f"### Re-push after one file changes, {m0['clients']} SotW clients connected — median of {rounds} rounds")
L.append("")
L.append("| change | until every client ACKed it | server CPU | pushed (responses by type) | bytes | reconnects | time / initial push |")
L.append("|---|---|---|---|---|---|---|")
labels = {"endpoint": "one more endpoint (Endpoints edit)", "service": "one more Service (+ Endpoints)"}
for i, c in enumerate(m0["changes"]):
    p = f"changes.{i}"
    L.append(f"| {labels.get(c['change'], c['change'])} | {spread(meshd, p + '.all_acked_s', s)} | "
             f"{spread(meshd, p + '.usage.server_cpu_s', cpu)} | {types(c)} | "
             f"{mb(med(meshd, p + '.received.bytes'))} | {spread(meshd, p + '.reconnects', count)} | "
             f"{ratio(med(meshd, p + '.all_acked_s'), med(meshd, 'initial.all_acked_s'))} |")
L.append("")
L.append("Timed from the file write: includes the file watcher's 50 ms settle and the 100 ms debounce.")
if delta:
    L.append("")
    L.append("### Delta xDS, one round (SotW: the medians above)")
    L.append("")
    L.append("| | SotW | Delta | Delta / SotW |")
    L.append("|---|---|---|---|")
    def drow(label, path, fmt):
        a, b = med(meshd, path), get(delta, path)
        L.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(b, a)} |")
    drow("initial push: until every client ACKed", "initial.all_acked_s", s)
    drow("initial push: server CPU", "initial.usage.server_cpu_s", cpu)
    drow("initial push: server peak RSS", "initial.usage.server_end.hwm_mib", mib)
    drow("initial push: bytes", "initial.received.bytes", gb)
    for i, c in enumerate(delta["changes"]):
        drow(f"{c['change']} re-push: until every client ACKed", f"changes.{i}.all_acked_s", s)
        drow(f"{c['change']} re-push: bytes", f"changes.{i}.received.bytes", mb)
if one:
    one_rss = one["initial"]["usage"]["server_end"]["rss_mib"]
    one_cpu = one["initial"]["usage"]["server_cpu_s"]
    n = m0["clients"]
    L.append("")
    L.append("### One client, fresh meshd (cold caches, no contention)")
    L.append("")
    L.append(f"ACKed CDS, EDS, LDS and RDS after {s(one['initial']['all_acked_s'])}; server CPU "
             f"{cpu(one_cpu)}; RSS {mib(one_rss)}; {mb(one['initial']['received']['bytes'])} "
             f"received. Each further client cost meshd "
             f"{(med(meshd, 'initial.usage.server_end.rss_mib') - one_rss) * 1024 / (n - 1):.0f} KiB "
             f"of RSS and {(med(meshd, 'initial.usage.server_cpu_s') - one_cpu) * 1000 / (n - 1):.1f} "
             f"CPU-ms for its initial push (the baseline: "
             f"{(med(replay, 'initial.usage.server_end.rss_mib') - med(replay, 'server_idle.rss_mib')) * 1024 / n:.0f} KiB, "
             f"{med(replay, 'initial.usage.server_cpu_s') * 1000 / n:.1f} CPU-ms).")
section = "\n".join(L) + "\n"
print()
print(section)

if failed:
    sys.exit("bench: a load run failed (see above); BENCHMARKS.md not updated")
if not write:
    sys.exit(0)
begin = f"<!-- bench-run {today} {commit} begin -->"
end = f"<!-- bench-run {today} {commit} end -->"
block = f"{begin}\n{section}{end}\n"
header = ("# Benchmarks\n\n"
          "Written by `make bench` (`scripts/bench.sh`); newest first. Numbers from noisy shared "
          "machines: read the ratios to the same-run baseline, not the absolute values.\n\n"
          "<!-- bench-runs -->\n")
text = open(out_path).read() if os.path.exists(out_path) else header
if begin in text and end in text:
    text = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda _: block, text,
                  flags=re.S)
elif "<!-- bench-runs -->\n" in text:
    text = text.replace("<!-- bench-runs -->\n", "<!-- bench-runs -->\n\n" + block, 1)
else:
    text = text.rstrip("\n") + "\n\n<!-- bench-runs -->\n\n" + block
with open(out_path, "w") as f:
    f.write(text)
print(f"bench: wrote {out_path}", file=sys.stderr)
PY
