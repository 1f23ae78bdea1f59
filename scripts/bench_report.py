#!/usr/bin/env python3
"""The report of `make bench` (scripts/bench.sh): reads the JSON its steps left in the work
directory, prints a Markdown section, writes it into BENCHMARKS.md between dated markers (a
section for the same date and commit is replaced), and writes the headline figures that
`make bench-check` compares against (scripts/bench-figures.json).

Usage: bench_report.py WORK ROUNDS BENCHMARKS.md WRITE(0|1) COMMIT FAILED(0|1) LOAD_BEFORE
       LOAD_AFTER FIGURES.json [FIGURES_OUT.json]
"""
import datetime, json, os, platform, re, statistics, sys

work, rounds, out_path, write, commit, failed, load_before, load_after, figures_path = sys.argv[1:10]
# Where else the figures go, whatever WRITE says (`make bench-check` compares from there).
figures_out = sys.argv[10] if len(sys.argv) > 10 else ""
rounds, write, failed = int(rounds), write == "1", failed == "1"


def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def text(name):
    try:
        with open(os.path.join(work, name)) as f:
            return f.read()
    except OSError:
        return None


meshd = [load(f"r{r}-meshd.json") for r in range(1, rounds + 1)]
replay = [load(f"r{r}-replay.json") for r in range(1, rounds + 1)]
facts = [load(f"r{r}-meshd-facts.json") for r in range(1, rounds + 1)]
delta, delta_facts, one = load("delta.json"), load("delta-facts.json"), load("one.json")
if not all(meshd) or not all(replay):
    sys.exit("bench: a run produced no result; nothing written")
isolation, isolation_facts = load("isolation.json"), load("isolation-facts.json")
churn = {m: load(f"churn-{m}.json") for m in ("sotw", "delta")}
storm = {m: load(f"storm-{m}.json") for m in ("plain", "tls")}
storm_facts = {m: load(f"storm-{m}-facts.json") for m in ("plain", "tls")}
replicas, issuance, envoys = load("replicas.json"), load("issuance.json"), load("envoys.json")
throughput, envoys_md = text("throughput.txt"), text("envoys.md")
no_metrics = load("no-metrics.json")

# What `make bench-check` compares: name -> {"value": v, "better": "lower" | "higher"}.
figures = {}


def figure(name, value, better="lower"):
    if value is not None and value == value:
        figures[name] = {"value": round(value, 4), "better": better}


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
ms = Unit(lambda x: f"{x:,.0f}", " ms")
kib = Unit(lambda x: f"{x:,.0f}", " KiB")
today = datetime.date.today().isoformat()
L = []
L.append(f"## make bench — {today}, commit {commit}")
L.append("")
knobs = os.environ.get("MESHD_BENCH_KNOBS", "")
L.append(f"Command: `{knobs}make bench` (release build, then `scripts/bench.sh`; {rounds} rounds). "
         f"Machine: {os.cpu_count()} × {cpu_model}, {mem_gib:.0f} GiB, Linux {platform.release()}; "
         "meshd (or the baseline) and the clients share these cores, and other work on the "
         f"machine shares them too: load average {load_before} before, {load_after} after.")
m0 = meshd[0] if meshd else None


def rounds_section():
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
    figure("full_push_cpu_vs_replay", med(meshd, "initial.usage.server_cpu_s")
           / med(replay, "initial.usage.server_cpu_s"))
    figure("full_push_peak_rss_mib", med(meshd, "initial.usage.server_end.hwm_mib"))
    figure("idle_rss_mib", med(facts, "idle_rss_mib"))
    figure("endpoint_change_cpu_s", med(meshd, "changes.0.usage.server_cpu_s"))


if m0:
    rounds_section()
else:
    L.append("")
    L.append("(No rounds of the SotW initial push against its replay baseline in this run.)")


def columns_row(label, runs, f):
    """A table row: `f` of each run side by side, `—` for a run missing or lacking a field."""
    cells = []
    for r in runs:
        try:
            cells.append(f(r) if r else "—")
        except (KeyError, TypeError, ZeroDivisionError):
            cells.append("—")
    L.append(f"| {label} | " + " | ".join(cells) + " |")


if isolation:
    shape = isolation["shape"]
    ff = isolation_facts or {}
    init = isolation["initial"]
    end = init["usage"]["server_end"]
    L.append("")
    L.append("### Namespace isolation: a `Sidecar` per namespace, one round")
    L.append("")
    L.append(f"The same mesh ({isolation['services']} services, {isolation['clients']} SotW clients) "
             "with a `Sidecar` in every namespace whose egress is `./*` and `istio-system/*`, as "
             "large meshes are run: each sidecar gets its namespace's 10 services.")
    L.append("")
    L.append("| | with isolation | without (rounds above, median) |")
    L.append("|---|---|---|")
    def irow(label, value, path, fmt):
        other = fmt(med(meshd, path)) if m0 else "—"
        L.append(f"| {label} | {fmt(value)} | {other} |")
    L.append(f"| RSS, idle (mesh loaded) | {mib(ff.get('idle_rss_mib', float('nan')))} | "
             f"{mib(med(facts, 'idle_rss_mib')) if m0 else '—'} |")
    irow("RSS after the full push", end["rss_mib"], "initial.usage.server_end.rss_mib", mib)
    irow("peak RSS (VmHWM)", end["hwm_mib"], "initial.usage.server_end.hwm_mib", mib)
    irow("server CPU, full push", init["usage"]["server_cpu_s"], "initial.usage.server_cpu_s", cpu)
    irow("until every client ACKed everything", init["all_acked_s"], "initial.all_acked_s", s)
    irow("bytes received by all clients", init["received"]["bytes"], "initial.received.bytes", gb)
    L.append(f"| CPU while idle (share of one core) | {pct(ff.get('idle_cpu_fraction', float('nan')))} | "
             f"{pct(med(facts, 'idle_cpu_fraction')) if m0 else '—'} |")
    ed = isolation.get("edits")
    if ed:
        lat = ed["until_all_acked"]
        L.append("")
        L.append(f"VirtualService edits ({lat['count']}, one after the other; each reaches the "
                 f"{ed['clients_per_edit']} sidecars that see the service): until every one ACKed "
                 f"p50 {ms(lat['p50_ms'])}, p99 {ms(lat['p99_ms'])}, max {ms(lat['max_ms'])}; "
                 f"{cpu(ed['server_cpu_s_per_edit'] or float('nan'))} of meshd per edit.")
        figure("isolation_edit_p99_ms", lat["p99_ms"])
    figure("isolation_peak_rss_mib", end["hwm_mib"])
    figure("idle_cpu_fraction", ff.get("idle_cpu_fraction"))

if any(churn.values()):
    L.append("")
    some = next(c for c in churn.values() if c)
    ch = some.get("churn") or {}
    L.append(f"### Changes while {some['clients']} clients are connected (no isolation: every "
             "client sees every change)")
    L.append("")
    L.append(f"VirtualService edits of one service, one after the other, then endpoint churn: "
             f"{ch.get('rate_per_s', 0):g} endpoint changes per second for {ch.get('secs', 0)} s, "
             "spread over the namespaces (each an Endpoints edit adding one address). Each change "
             "is timed from its file write until every client had ACKed a response carrying it "
             "(or a later change of the same Endpoints); this includes the file watcher's 50 ms "
             "settle and meshd's 100 ms debounce.")
    L.append("")
    L.append("| | SotW | Delta |")
    L.append("|---|---|---|")
    def crow(label, f):
        columns_row(label, [churn[m] for m in ("sotw", "delta")], f)
    crow("endpoint changes written / reached every client",
         lambda r: f"{r['churn']['written']} / {r['churn']['completed']}")
    crow("endpoint change: p50", lambda r: ms(r["churn"]["until_all_acked"]["p50_ms"]))
    crow("endpoint change: p99", lambda r: ms(r["churn"]["until_all_acked"]["p99_ms"]))
    crow("endpoint change: max", lambda r: ms(r["churn"]["until_all_acked"]["max_ms"]))
    crow("meshd CPU per endpoint change",
         lambda r: f"{r['churn']['server_cpu_s_per_change']:.3f} CPU-s")
    crow("meshd CPU over the churn (share of one core)",
         lambda r: pct(r["churn"]["server_cpu_s"] / r["churn"]["secs"]))
    crow("bytes to all clients per endpoint change",
         lambda r: f"{r['churn']['received']['bytes'] / r['churn']['written'] / 1e3:,.0f} kB")
    crow("client reconnects", lambda r: count(r["churn"]["reconnects"]))
    crow("VirtualService edit: p50", lambda r: ms(r["edits"]["until_all_acked"]["p50_ms"]))
    crow("VirtualService edit: p99", lambda r: ms(r["edits"]["until_all_acked"]["p99_ms"]))
    crow("VirtualService edit: max", lambda r: ms(r["edits"]["until_all_acked"]["max_ms"]))
    crow("meshd CPU per VirtualService edit",
         lambda r: f"{r['edits']['server_cpu_s_per_edit']:.2f} CPU-s")
    crow("bytes to all clients per edit",
         lambda r: mb(r["edits"]["received"]["bytes"] / max(1, r["edits"]["until_all_acked"]["count"])))
    for m in ("sotw", "delta"):
        r = churn[m]
        if r and r.get("churn"):
            figure(f"churn_{m}_p99_ms", r["churn"]["until_all_acked"]["p99_ms"])
            figure(f"churn_{m}_cpu_per_change_s", r["churn"]["server_cpu_s_per_change"])
        if r and r.get("edits"):
            figure(f"edit_{m}_p99_ms", r["edits"]["until_all_acked"]["p99_ms"])

if any(storm.values()):
    some = next(r for r in storm.values() if r)
    L.append("")
    L.append(f"### Reconnect storm: {some['clients']} clients with isolation, all at once")
    L.append("")
    L.append(f"{some['services']} services, {some['pods']} pods; every client opens its stream at "
             "the same moment (no ramp), as after a control-plane restart. TLS: each client "
             "connects from its pod's own address (127.100.0.0/14; the file source's identity "
             "proof), verifies meshd's serving certificate and also subscribes to its secrets "
             "(SDS `default`, `ROOTCA`): meshd mints one certificate per client.")
    L.append("")
    L.append("| | plaintext | TLS + SDS |")
    L.append("|---|---|---|")
    def srow(label, f):
        runs = [storm[m] and (storm[m], storm_facts[m] or {}) for m in ("plain", "tls")]
        columns_row(label, runs, lambda pair: f(*pair))
    srow("until every client ACKed everything", lambda r, f: s(r["initial"]["all_acked_s"]))
    srow("per client, p50 / p99",
         lambda r, f: f"{s(r['initial']['p50_s'])} / {s(r['initial']['p99_s'])}")
    srow("meshd CPU", lambda r, f: cpu(r["initial"]["usage"]["server_cpu_s"]))
    srow("meshd RSS idle → after", lambda r, f:
         f"{mib(f['idle_rss_mib'])} → {mib(r['initial']['usage']['server_end']['rss_mib'])}")
    srow("meshd peak RSS", lambda r, f: mib(r["initial"]["usage"]["server_end"]["hwm_mib"]))
    srow("meshd RSS per connected client", lambda r, f: kib(
        (r["initial"]["usage"]["server_end"]["rss_mib"] - f["idle_rss_mib"]) * 1024 / r["clients"]))
    srow("streams the server closed (client reconnected)", lambda r, f: count(r["initial"]["reconnects"]))
    for m in ("plain", "tls"):
        r, ff = storm[m], storm_facts[m]
        if r and ff:
            figure(f"storm_{m}_s", r["initial"]["all_acked_s"])
            figure(f"storm_{m}_rss_per_client_kib",
                   (r["initial"]["usage"]["server_end"]["rss_mib"] - ff["idle_rss_mib"]) * 1024 / r["clients"])

if replicas and replicas.get("failover"):
    fo = replicas["failover"]
    L.append("")
    L.append(f"### Replica loss: {replicas['clients']} clients on two replicas, one killed")
    L.append("")
    L.append(f"Two `meshd serve` on the same mesh ({replicas['services']} services, isolation) and "
             f"CA; client *i* connects to replica *i mod 2* and, like Envoy, reconnects to the "
             f"other when its stream fails. SIGKILL to the first: its {fo['moved']} clients had "
             f"ACKed everything from the survivor after {s(fo['all_resynced_s'])} (p50 "
             f"{s(fo['p50_s'])}; this includes the clients' reconnect back-off of 0.25–0.5 s); the "
             f"survivor spent {cpu(fo['usage']['server_cpu_s'] or float('nan'))} and ended at "
             f"{mib(fo['usage']['server_end']['rss_mib'])}.")
    figure("failover_s", fo["all_resynced_s"])

if throughput:
    line = next((l for l in throughput.splitlines() if l.startswith("median:")), None)
    L.append("")
    L.append("### Push throughput: meshd-xds against tonic's generated server")
    L.append("")
    L.append("`control-plane/xds/examples/push_throughput.rs` (500 lean clients, 3 rounds each, "
             "alternating): the same pre-encoded resources of the benchmark mesh's sizes, served "
             "by meshd-xds's ADS server and by tonic's generated server.")
    L.append("")
    L.append("```")
    L.extend(l for l in throughput.splitlines() if l.startswith(("round", "median")))
    L.append("```")
    m = re.search(r"throughput (\d+) % of tonic", line or "")
    if m:
        figure("push_throughput_vs_tonic", int(m.group(1)) / 100, "higher")

if issuance:
    L.append("")
    L.append("### CA issuance")
    L.append("")
    L.append(f"`ca/examples/issuance_bench.rs` ({issuance['seconds_per_case']} s per case), "
             "against aws-lc-rs's raw P-256 operations in the same run.")
    L.append("")
    L.append("| | per second | vs raw signing | vs raw verify + sign |")
    L.append("|---|---|---|---|")
    raw, pair = issuance["raw_p256_signatures_per_s"], issuance.get("raw_p256_verify_and_sign_per_s")
    def arow(label, v):
        L.append(f"| {label} | {v:,.0f} | {v / raw:.2f} | {f'{v / pair:.2f}' if pair else '—'} |")
    arow("raw P-256 signature", raw)
    if issuance.get("raw_p256_verifications_per_s"):
        arow("raw P-256 verification", issuance["raw_p256_verifications_per_s"])
    if pair:
        arow("raw P-256 verify then sign (a CSR's irreducible work)", pair)
    arow("`mint`: key pair + SPIFFE certificate", issuance["mint_key_and_cert_per_s"])
    arow("`sign_csr`: parse, verify, sign for the caller", issuance["sign_csr_per_s"])
    figure("sign_csr_vs_raw_sign", issuance["sign_csr_per_s"] / raw, "higher")
    figure("mint_vs_raw_sign", issuance["mint_key_and_cert_per_s"] / raw, "higher")

if no_metrics and m0:
    nm = no_metrics["initial"]
    n = no_metrics["clients"]
    L.append("")
    L.append("### What Istio's standard metrics cost")
    L.append("")
    L.append(f"The rounds' initial push ({n} SotW clients, no isolation) with the metrics off "
             "(`defaultProviders.metrics: []` in the mesh config: no stats access logger, no peer "
             "header filter on servers). The counting itself happens inside each Envoy, per "
             "request; nothing per request reaches meshd, so what meshd pays is configuration.")
    L.append("")
    L.append("| | metrics on (rounds, median) | metrics off | on / off |")
    L.append("|---|---|---|---|")
    def trow(label, path, fmt, scale=1.0):
        on, off = med(meshd, path) / scale, get(no_metrics, path) / scale
        L.append(f"| {label} | {fmt(on)} | {fmt(off)} | {ratio(on, off)} |")
    kb = Unit(lambda x: f"{x / 1e3:,.0f}", " kB")
    trow("listeners (LDS) per client", "initial.received.by_type.LDS.bytes", kb, n)
    trow("everything per client", "initial.received.bytes", kb, n)
    trow("meshd CPU, full push", "initial.usage.server_cpu_s", cpu)
    trow("meshd peak RSS", "initial.usage.server_end.hwm_mib", mib)
    trow("client CPU (decode + ACK)", "initial.usage.loadgen_cpu_s", cpu)
    trow("until every client ACKed", "initial.all_acked_s", s)
    figure("metrics_cost_config_ratio", med(meshd, "initial.received.bytes")
           / get(no_metrics, "initial.received.bytes"))

if envoys_md:
    L.append("")
    L.append(envoys_md.strip())
if envoys:
    figure("envoys_until_every_envoy_p50_s", envoys["meshd"]["until_every_envoy_s"]["p50"])
    figure("envoys_vs_file_subscription_p50", envoys["ratio_until_every_envoy_p50"])

section = "\n".join(L) + "\n"
print()
print(section)


def write_figures(path, merge=False):
    """This run's figures; with `merge`, on top of those already in `path`, so a run of some steps
    keeps the other steps' newest figures (each figure says which commit measured it)."""
    mine = {name: dict(f, commit=commit) for name, f in figures.items()}
    kept = {}
    if merge and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        kept = {name: dict(f, commit=f.get("commit", old.get("commit", "")))
                for name, f in old.get("figures", {}).items()}
    with open(path, "w") as f:
        json.dump({"date": today, "commit": commit, "figures": {**kept, **mine}}, f, indent=1,
                  sort_keys=True)
        f.write("\n")
    print(f"bench: wrote {path}", file=sys.stderr)


if figures_out:
    write_figures(figures_out)


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
if figures:
    write_figures(figures_path, merge=True)
