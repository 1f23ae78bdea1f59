#!/usr/bin/env python3
"""Real Envoys: a VirtualService edit until every Envoy applied it, next to Envoy's own apply time.

One run, in a private network namespace (see `enter_private_network`):
  meshd     `meshd serve` on a small mesh (one namespace, --services Services, one Pod per Envoy)
            and --envoys stock Envoys, each started with the bootstrap `meshd bootstrap` writes
            for its Pod. Then --edits VirtualService edits, one at a time: each rewrites a header
            match of service 0's route (a unique marker), which lands in route configuration
            `8080` of every sidecar. Timed from the file's rename into the watched directory until
            every Envoy applied it.
  baseline  as many more Envoys whose route configuration `8080` comes from a file
            (`path_config_source` with a `watched_directory`, the file renamed into place as
            Envoy's docs require): after each meshd edit, the route configuration meshd's Envoys
            now hold (from their config_dump) is renamed in and timed the same way. The same
            route configuration, as JSON rather than protobuf, and no control plane. meshd and
            baseline edits alternate, so machine noise hits both alike.

"Applied" is Envoy's own record: the route configuration's `config_reload` counter moved and its
config_dump holds the edit's marker; the time is Envoy's `config_reload_time_ms` stat (ms, taken
when its main thread accepted the route configuration, as it hands it to the workers), not when
the poller noticed, so polling (every --interval
ms, one kept-alive admin connection per Envoy) adds no delay to the numbers. Envoy's
`rds.8080.update_duration` histogram (time spent inside the update) is reported beside them.

Prints a markdown section on stdout (`scripts/bench.sh` puts it into BENCHMARKS.md) and writes
one JSON line to --json. Needs Python 3 (stdlib) and the right to make a network namespace (root,
or unprivileged user namespaces).
"""

import argparse
import ctypes
import datetime
import errno
import fcntl
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("MESHD_CACHE", os.path.expanduser("~/.cache/meshd"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

NAMESPACE = "bench"
# The edited route: service 0's HTTP port, whose route configuration sidecars name by the port.
PORT = 8080
ROUTE = str(PORT)
STAT_PREFIX = f"outbound_0.0.0.0_{PORT}"
# Inside the private namespace nothing else listens, so fixed ports are safe.
XDS, SECURE, DEBUG, WEBHOOK = 15010, 15012, 15014, 15017
MESHD_ADMIN_BASE, BASELINE_ADMIN_BASE = 20000, 21000


def log(msg):
    print(f"bench-envoys: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- the private network namespace --------------------------------------------------------------

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)


def enter_private_network():
    """Moves this process (and so everything it starts) into a network namespace of its own.

    meshd's sidecar configuration binds 0.0.0.0 (virtualOutbound 15001, virtualInbound 15006, the
    bootstrap's 15021 and 15090), as a real sidecar does in its pod's namespace. Here all Envoys
    share one namespace that has only loopback, so those sockets are reachable from nowhere; the
    Envoys share the ports through SO_REUSEPORT, which Envoy sets on listeners by default. meshd
    and every admin port listen on 127.0.0.1. The namespace ends with the last process in it.
    """
    if LIBC.unshare(CLONE_NEWNET) != 0:
        if ctypes.get_errno() != errno.EPERM:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        # Not root: a user namespace in which we are root, then the network namespace.
        uid, gid = os.getuid(), os.getgid()
        if LIBC.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            raise BenchError("cannot make a network namespace (needs root or unprivileged user "
                             f"namespaces): {os.strerror(ctypes.get_errno())}")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                           ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


# --- processes ------------------------------------------------------------------------------------

def _die_with_parent():
    # Runs in the child: if this script dies without cleaning up (SIGKILL), the kernel kills it.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Processes:
    """Everything this run started; `stop_all` ends them (TERM, then KILL)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.running = []

    def start(self, name, argv):
        path = os.path.join(self.log_dir, f"{name}.log")
        with open(path, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        proc.log_path = path
        self.running.append(proc)
        return proc

    def stop_all(self):
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running = []


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def cpu_s(pid):
    """CPU time of a process, all its threads, to the ns: its CPU-time clock (what
    clock_getcpuclockid(3) names); /proc's utime + stime only count 10 ms ticks."""
    try:
        return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED, whole process
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- Envoy's admin API ----------------------------------------------------------------------------

STATS_PATH = "/stats?filter=" + urllib.parse.quote(
    rf"\.rds\.{ROUTE}\.(config_reload|config_reload_time_ms|update_rejected|version_text)$")
ROUTE_PATH = f"/config_dump?resource=dynamic_route_configs&name_regex=%5E{ROUTE}%24"
DURATION_PATH = "/stats?filter=" + urllib.parse.quote(rf"\.rds\.{ROUTE}\.update_duration$")
REJECTED_PATH = "/stats?filter=" + urllib.parse.quote(r"update_rejected$")


class HttpPort:
    """GETs on 127.0.0.1:`port` over one kept-alive connection (reopened once if it broke)."""

    def __init__(self, name, port):
        self.name, self.port = name, port
        self.conn = None

    def get(self, path):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise BenchError(f"{self.name}: GET {path}: HTTP {resp.status}")
                return body
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


class Envoy(HttpPort):
    """One Envoy process and its admin port."""

    def __init__(self, name, proc, admin_port):
        super().__init__(name, admin_port)
        self.proc = proc
        self.reloads = 0  # `config_reload` when the current edit was written
        self.rejected = 0

    def rds_stats(self):
        stats = {}
        for line in self.get(STATS_PATH).decode().splitlines():
            name, _, value = line.partition(": ")
            key = name.rsplit(".", 1)[-1]
            stats[key] = value.strip('"') if key == "version_text" else int(value)
        return stats

    def route_config(self):
        """Route configuration `8080` as Envoy holds it (the DynamicRouteConfig), or None."""
        configs = json.loads(self.get(ROUTE_PATH)).get("configs", [])
        return configs[0] if configs else None

    def cpu_s(self):
        return cpu_s(self.proc.pid)


def wait_applied(envoys, marker, t0, timeout, interval):
    """Polls until every Envoy applied the route configuration holding `marker`.

    Returns {name: (applied_at, seen_at)}: Envoy's own `config_reload_time_ms` for it, and when
    the poller saw it (`seen_at` is as late as the polling makes it; `applied_at` is not).
    Raises if some Envoy has not applied it after `timeout` seconds, naming it and what it holds
    instead.
    """
    done = {}
    pending = list(envoys)
    needle = marker.encode()
    turn = 0
    while pending:
        # Until one Envoy has it, ask one per round (in turn), not all: the times are Envoy's own,
        # so asking later changes no number, while 30 admin requests every few ms would compete
        # for the cores with the work being timed.
        if done:
            asked = pending
        else:
            asked = [pending[turn % len(pending)]]
            turn += 1
        still = [e for e in pending if e not in asked]
        for envoy in asked:
            if envoy.proc.poll() is not None:
                raise BenchError(f"{envoy.name} exited ({envoy.proc.returncode}); "
                                 f"{envoy.proc.log_path}:\n{tail(envoy.proc.log_path)}")
            stats = envoy.rds_stats()
            if stats.get("update_rejected", 0) > envoy.rejected:
                raise BenchError(f"{envoy.name} rejected route configuration {ROUTE} "
                                 f"(update_rejected {stats['update_rejected']}); "
                                 f"{envoy.proc.log_path}:\n{tail(envoy.proc.log_path)}")
            if stats.get("config_reload", 0) > envoy.reloads and needle in envoy.get(ROUTE_PATH):
                done[envoy.name] = (stats["config_reload_time_ms"] / 1000, time.time())
                envoy.reloads = stats["config_reload"]
            else:
                still.append(envoy)
        pending = still
        if pending and time.time() - t0 > timeout:
            held = {e.name: e.rds_stats().get("version_text") for e in pending[:5]}
            raise BenchError(f"{len(pending)} of {len(envoys)} Envoys had not applied {marker} "
                             f"after {timeout:.0f} s; they hold versions {held}")
        if pending:
            time.sleep(interval)
    return done


def update_duration_ms(envoys):
    """Envoy's `rds.8080.update_duration` histogram (cumulative since start): the median of the
    Envoys' P50s and the largest P100, in ms; None where Envoy records none (file subscriptions).
    Envoy publishes histograms at its stats flush (every 5 s)."""
    p50s, p100s = [], []
    for envoy in envoys:
        text = envoy.get(DURATION_PATH).decode()
        quantiles = dict(re.findall(r"P(\d+(?:\.\d+)?)\([^,]*,([^)]*)\)", text))
        if "50" in quantiles and quantiles["50"] != "nan":
            p50s.append(float(quantiles["50"]))
            p100s.append(float(quantiles["100"]))
    if not p50s:
        return None
    return {"p50_ms": statistics.median(p50s), "max_ms": max(p100s), "envoys": len(p50s)}


def rejected_total(envoys):
    """Every update any Envoy rejected (`*.update_rejected`: CDS, LDS, RDS, EDS, SDS)."""
    total = 0
    for envoy in envoys:
        for line in envoy.get(REJECTED_PATH).decode().splitlines():
            total += int(line.rsplit(": ", 1)[1])
    return total


# --- the mesh and the configuration ---------------------------------------------------------------

def mesh_yaml(envoys, services):
    """One namespace: `services` Services on port 8080, one Pod (with its Envoy) each in turn."""
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
            "  labels:\n    istio-injection: enabled\n"]
    for s in range(services):
        app = f"svc-{s}"
        pods = [p for p in pod_list(envoys, services) if p["app"] == app]
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n  namespace: {NAMESPACE}\n"
            f"  labels:\n    app: {app}\nspec:\n  clusterIP: 172.20.0.{s + 1}\n"
            f"  selector:\n    app: {app}\n  ports:\n  - name: http\n    port: {PORT}\n"
            f"    targetPort: {PORT}\n    protocol: TCP\n")
        for pod in pods:
            docs.append(
                f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod['name']}\n"
                f"  namespace: {NAMESPACE}\n  labels:\n    app: {app}\n    version: v1\n"
                f"spec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n"
                f"    ports:\n    - containerPort: {PORT}\nstatus:\n  podIP: {pod['ip']}\n")
        if pods:
            addresses = "".join(
                f"  - ip: {p['ip']}\n    targetRef:\n      kind: Pod\n      name: {p['name']}\n"
                f"      namespace: {NAMESPACE}\n" for p in pods)
            docs.append(
                f"apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {app}\n"
                f"  namespace: {NAMESPACE}\nsubsets:\n- addresses:\n{addresses}"
                f"  ports:\n  - name: http\n    port: {PORT}\n    protocol: TCP\n")
    return "---\n".join(docs)


def pod_list(envoys, services):
    # Pod addresses only identify the proxies to meshd; nothing listens on them.
    return [{"name": f"svc-{i % services}-{i // services}", "app": f"svc-{i % services}",
             "ip": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(envoys)]


def virtual_service_yaml(marker):
    """Service 0's routes: requests carrying the marker header first, then everything."""
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata:\n  name: svc-0\n  namespace: {NAMESPACE}\n"
        "spec:\n  hosts: [svc-0]\n  http:\n  - name: edit\n"
        f"    match: [{{headers: {{x-bench-edit: {{exact: {marker}}}}}}}]\n"
        "    route: [{destination: {host: svc-0}}]\n"
        "  - route: [{destination: {host: svc-0}}]\n")


def baseline_bootstrap(admin_port, rds_file):
    """An Envoy whose route configuration 8080 comes from `rds_file`, reloaded when a file is
    moved into its directory; one listener (not bound) with the HTTP connection manager that
    uses it, named as in meshd's sidecars so the stats have the same names."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "rds": {"route_config_name": ROUTE, "config_source": {
            "resource_api_version": "V3",
            "path_config_source": {"path": rds_file,
                                   "watched_directory": {"path": os.path.dirname(rds_file)}}}},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "node": {"id": f"baseline-{admin_port}", "cluster": "baseline"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": f"0.0.0.0_{PORT}",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": PORT}},
            "bind_to_port": False,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }


def rename_into(staging_dir, target, text):
    """Writes `text` beside the watched directory, then renames it to `target`; returns the time
    just before the rename (the edit's start)."""
    tmp = os.path.join(staging_dir, os.path.basename(target))
    with open(tmp, "w") as f:
        f.write(text)
    t0 = time.time()
    os.rename(tmp, target)
    return t0


# --- numbers --------------------------------------------------------------------------------------

def quantile(values, q):
    """Nearest-rank quantile (with 10 values, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def summary(values):
    return {"p50": statistics.median(values), "p99": quantile(values, 0.99), "max": max(values),
            "n": len(values)}


class Fleet:
    """One set of Envoys and what its edits measured."""

    def __init__(self, label):
        self.label = label
        self.envoys = []
        self.ready_s = None
        self.edits = []  # per edit: {"all_s", "spread_s", "seen_s", "per_envoy": {name: s}, ...}
        # All of the fleet's Envoys, over the whole edit phase (both sides' edits, same window).
        self.cpu_during_edits = None

    def record(self, t0, applied, meshd_cpu=None):
        latencies = {name: at - t0 for name, (at, _) in applied.items()}
        self.edits.append({
            "written_at": t0,
            "all_s": max(latencies.values()),
            "first_s": min(latencies.values()),
            "spread_s": max(latencies.values()) - min(latencies.values()),
            "seen_s": max(seen for _, seen in applied.values()) - t0,
            "meshd_cpu_s": meshd_cpu,
            "per_envoy": latencies,
        })

    def envoy_cpu(self):
        return sum(e.cpu_s() for e in self.envoys)

    def result(self):
        every = [e["all_s"] for e in self.edits]
        each = [s for e in self.edits for s in e["per_envoy"].values()]
        medians = [statistics.median(e["per_envoy"][env.name] for e in self.edits)
                   for env in self.envoys]
        return {
            "until_every_envoy_s": summary(every),
            "each_envoy_s": summary(each),
            "spread_s": summary([e["spread_s"] for e in self.edits]),
            "per_envoy_median_s": {"fastest": min(medians), "slowest": max(medians)},
            "seen_by_poller_s": summary([e["seen_s"] for e in self.edits]),
            "envoy_cpu_s_during_edits": self.cpu_during_edits,
            "startup_until_every_envoy_has_route_s": self.ready_s,
            "envoy_rss_mib_mean": statistics.mean(status_mib(e.proc.pid, "VmRSS")
                                                  for e in self.envoys),
        }


# --- the run --------------------------------------------------------------------------------------

def start_envoys(procs, fleet, args, bootstraps, admin_base, marker):
    t0 = time.time()
    for i, bootstrap in enumerate(bootstraps):
        name = f"{fleet.label}-{i}"
        proc = procs.start(name, [args.envoy, "-c", bootstrap, "--disable-hot-restart",
                                  "--concurrency", str(args.envoy_concurrency), "-l", "warning"])
        fleet.envoys.append(Envoy(name, proc, admin_base + i))
    # Until the admin port answers, `get` raises: keep trying while the Envoy lives.
    done = set()
    while len(done) < len(fleet.envoys):
        for envoy in fleet.envoys:
            if envoy.name in done:
                continue
            if envoy.proc.poll() is not None:
                raise BenchError(f"{envoy.name} exited ({envoy.proc.returncode}); "
                                 f"{envoy.proc.log_path}:\n{tail(envoy.proc.log_path)}")
            try:
                stats = envoy.rds_stats()
                if stats.get("config_reload", 0) > 0 and marker.encode() in envoy.get(ROUTE_PATH):
                    envoy.reloads = stats["config_reload"]
                    envoy.rejected = stats.get("update_rejected", 0)
                    done.add(envoy.name)
            except (OSError, http.client.HTTPException):
                pass
        if time.time() - t0 > args.timeout * 4:
            missing = sorted(e.name for e in fleet.envoys if e.name not in done)
            raise BenchError(f"{fleet.label}: {len(missing)} Envoys without route configuration "
                             f"{ROUTE} holding {marker} after {args.timeout * 4:.0f} s: "
                             f"{missing[:5]}")
        time.sleep(0.1)
    fleet.ready_s = time.time() - t0


def run(args, work):
    procs = Processes(work)
    try:
        return measure(args, work, procs)
    finally:
        procs.stop_all()


def measure(args, work, procs):
    meshd_fleet, baseline = Fleet("meshd"), Fleet("baseline")
    mesh, staging = os.path.join(work, "mesh"), os.path.join(work, "staging")
    rds_dir = os.path.join(work, "rds")
    for d in (mesh, staging, rds_dir):
        os.mkdir(d)
    run_id = os.urandom(4).hex()
    marker = lambda k: f"edit-{k}-{run_id}"  # noqa: E731
    with open(os.path.join(mesh, "mesh.yaml"), "w") as f:
        f.write(mesh_yaml(args.envoys, args.services))
    with open(os.path.join(mesh, "vs.yaml"), "w") as f:
        f.write(virtual_service_yaml(marker(0)))

    log(f"meshd on {args.services} Services and {args.envoys} Pods")
    meshd = procs.start("meshd", [
        args.meshd, "serve", "--config-dir", mesh, "--ca-dir", os.path.join(work, "ca"),
        "--xds-addr", f"127.0.0.1:{XDS}", "--secure-addr", f"127.0.0.1:{SECURE}",
        "--debug-addr", f"127.0.0.1:{DEBUG}", "--webhook-addr", f"127.0.0.1:{WEBHOOK}",
        *(["--debounce-after", args.debounce_after] if args.debounce_after else [])])
    debug = HttpPort("meshd debug", DEBUG)
    deadline = time.time() + 60
    while True:
        if meshd.poll() is not None:
            raise BenchError(f"meshd exited ({meshd.returncode}):\n{tail(meshd.log_path)}")
        try:
            debug.get("/ready")
            break
        except (OSError, http.client.HTTPException, BenchError):
            if time.time() > deadline:
                raise BenchError(f"meshd not ready after 60 s:\n{tail(meshd.log_path)}")
            time.sleep(0.05)

    bootstraps = []
    for i, pod in enumerate(pod_list(args.envoys, args.services)):
        path = os.path.join(work, f"meshd-{i}.json")
        subprocess.run([args.meshd, "bootstrap", "--node-type", "sidecar", "--pod", pod["name"],
                        "--namespace", NAMESPACE, "--ip", pod["ip"],
                        "--labels", f"app={pod['app']},version=v1",
                        "--service-account", pod["app"], "--xds-addr", f"127.0.0.1:{XDS}",
                        "--admin-port", str(MESHD_ADMIN_BASE + i), "-o", path],
                       check=True, stdout=subprocess.DEVNULL)
        bootstraps.append(path)
    log(f"{args.envoys} Envoys on meshd's bootstraps")
    start_envoys(procs, meshd_fleet, args, bootstraps, MESHD_ADMIN_BASE, marker(0))
    log(f"  every Envoy has route configuration {ROUTE} after {meshd_fleet.ready_s:.1f} s")

    # The baseline starts from what meshd's Envoys hold, byte for byte.
    rds_file = os.path.join(rds_dir, "rds.json")

    def discovery_response():
        held = meshd_fleet.envoys[0].route_config()
        return json.dumps({"version_info": held["version_info"],
                           "resources": [held["route_config"]]})

    rename_into(staging, rds_file, discovery_response())
    bootstraps = []
    for i in range(args.envoys):
        path = os.path.join(work, f"baseline-{i}.json")
        with open(path, "w") as f:
            json.dump(baseline_bootstrap(BASELINE_ADMIN_BASE + i, rds_file), f)
        bootstraps.append(path)
    log(f"{args.envoys} Envoys reading route configuration {ROUTE} from a file (baseline)")
    start_envoys(procs, baseline, args, bootstraps, BASELINE_ADMIN_BASE, marker(0))
    log(f"  every Envoy has route configuration {ROUTE} after {baseline.ready_s:.1f} s")

    time.sleep(args.gap)
    meshd_cpu0, edits_t0 = cpu_s(meshd.pid), time.time()
    fleet_cpu0 = [f.envoy_cpu() for f in (meshd_fleet, baseline)]
    for k in range(1, args.edits + 1):
        cpu_m = cpu_s(meshd.pid)
        t0 = rename_into(staging, os.path.join(mesh, "vs.yaml"), virtual_service_yaml(marker(k)))
        applied = wait_applied(meshd_fleet.envoys, marker(k), t0, args.timeout, args.interval)
        meshd_fleet.record(t0, applied, cpu_s(meshd.pid) - cpu_m)
        time.sleep(args.gap)

        t0 = rename_into(staging, rds_file, discovery_response())
        applied = wait_applied(baseline.envoys, marker(k), t0, args.timeout, args.interval)
        baseline.record(t0, applied)
        log(f"  edit {k}/{args.edits}: meshd {meshd_fleet.edits[-1]['all_s'] * 1000:.0f} ms, "
            f"baseline {baseline.edits[-1]['all_s'] * 1000:.0f} ms")
        time.sleep(args.gap)
    for fleet, cpu0 in zip((meshd_fleet, baseline), fleet_cpu0):
        fleet.cpu_during_edits = fleet.envoy_cpu() - cpu0
    meshd_usage = {
        "cpu_s_during_edits": cpu_s(meshd.pid) - meshd_cpu0,
        "edits_wall_s": time.time() - edits_t0,
        "cpu_s_per_edit": statistics.median(e["meshd_cpu_s"] for e in meshd_fleet.edits),
        "rss_mib": status_mib(meshd.pid, "VmRSS"),
        "hwm_mib": status_mib(meshd.pid, "VmHWM"),
    }

    # Every meshd-fed Envoy ends holding what the last edit made (the baseline's file), and none
    # rejected anything.
    last = json.loads(discovery_response())["resources"][0]
    differ = [e.name for e in meshd_fleet.envoys if e.route_config()["route_config"] != last]
    if differ:
        raise BenchError(f"Envoys hold a different route configuration {ROUTE} than "
                         f"{meshd_fleet.envoys[0].name}: {differ[:5]}")
    rejected = {f.label: rejected_total(f.envoys) for f in (meshd_fleet, baseline)}
    # meshd's own view of the same proxies: how many, and each type's sync state.
    states = {}
    syncz = json.loads(debug.get("/debug/syncz"))
    for proxy in syncz:
        for kind, status in proxy["types"].items():
            key = f"{kind} {status['state']}"
            states[key] = states.get(key, 0) + 1
    # Histograms reach the admin API at Envoy's stats flush (every 5 s).
    time.sleep(5.5)
    return {
        "meshd": meshd_fleet.result(), "baseline": baseline.result(), "meshd_usage": meshd_usage,
        "rejected": rejected, "meshd_syncz": {"proxies": len(syncz), "states": states},
        "update_duration_ms": {f.label: update_duration_ms(f.envoys)
                               for f in (meshd_fleet, baseline)},
        "per_edit": {"meshd": meshd_fleet.edits, "baseline": baseline.edits},
    }


# --- output ---------------------------------------------------------------------------------------

def commit():
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain"], check=True,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(args, command, outcome, load):
    """The markdown section."""
    m, b, usage = outcome["meshd"], outcome["baseline"], outcome["meshd_usage"]
    rejected, durations = outcome["rejected"], outcome["update_duration_ms"]
    ms = lambda x: f"{x * 1000:.0f} ms"  # noqa: E731
    ratio = lambda x, y: f"{x / y:.1f}×" if y > 0 else "—"  # noqa: E731
    n, e = args.envoys, args.edits
    L = [f"### {n} Envoys: a VirtualService edit until every Envoy applied it — {e} edits", ""]
    L.append(f"Command: `{command}`, everything in a private network namespace (loopback "
             f"only). {n} stock Envoys ({os.path.basename(args.envoy)} "
             f"{envoy_version(args.envoy)}, `--concurrency {args.envoy_concurrency}`) on "
             f"`meshd bootstrap` sidecar bootstraps, one per Pod of a mesh of {args.services} "
             f"Services; each edit rewrites a header match of service 0's VirtualService, which "
             f"changes route configuration `{ROUTE}` of every sidecar. Load average {load[0]} "
             f"before, {load[1]} after.")
    L.append("")
    L.append("| | meshd (file → xDS → Envoy) | baseline: Envoy's file subscription "
             "| meshd / baseline |")
    L.append("|---|---|---|---|")

    def row(label, path, fmt=ms):
        x, y = m, b
        for k in path.split("."):
            x, y = x[k], y[k]
        L.append(f"| {label} | {fmt(x)} | {fmt(y)} | {ratio(x, y)} |")

    row("edit → every Envoy applied it, p50", "until_every_envoy_s.p50")
    row(f"edit → every Envoy applied it, p99 ({e} edits)", "until_every_envoy_s.p99")
    row("edit → every Envoy applied it, max", "until_every_envoy_s.max")
    row(f"edit → one Envoy applied it, p50 ({n}×{e})", "each_envoy_s.p50")
    row(f"edit → one Envoy applied it, p99 ({n}×{e})", "each_envoy_s.p99")
    row("spread, last − first Envoy per edit, p50", "spread_s.p50")
    row("spread, last − first Envoy per edit, max", "spread_s.max")
    row("per-Envoy median: fastest Envoy", "per_envoy_median_s.fastest")
    row("per-Envoy median: slowest Envoy", "per_envoy_median_s.slowest")
    row("start → every Envoy has the route configuration",
        "startup_until_every_envoy_has_route_s", lambda x: f"{x:.1f} s")
    L.append("")
    L.append(f"meshd during the {e} edits ({usage['edits_wall_s']:.0f} s, both sides' edits): "
             f"{usage['cpu_s_during_edits']:.2f} CPU-s, {usage['cpu_s_per_edit'] * 1000:.0f} "
             f"CPU-ms per edit (median, file write → every Envoy applied); RSS "
             f"{usage['rss_mib']:.0f} MiB after them (peak {usage['hwm_mib']:.0f} MiB). "
             f"Updates rejected (NACKs, all xDS types): {rejected['meshd']} by meshd's Envoys, "
             f"{rejected['baseline']} by the baseline's. Every meshd-fed Envoy ended with the "
             f"same route configuration; meshd's `/debug/syncz` after the edits: "
             f"{outcome['meshd_syncz']['proxies']} proxies, "
             + ", ".join(f"{k} {v}" for k, v in sorted(outcome["meshd_syncz"]["states"].items()))
             + ".")
    L.append("")
    L.append("Times are each Envoy's own `config_reload_time_ms` for the edit (when its main "
             "thread accepted the new route configuration; ms resolution) minus the instant the "
             "file was renamed into place; a poller (every "
             f"{args.interval * 1000:.0f} ms) only finds out that an Envoy is done. Baseline: "
             f"{n} more Envoys whose route configuration `{ROUTE}` is a file "
             "(`path_config_source` with `watched_directory`), renamed into place holding what "
             "meshd's Envoys hold after the same edit (as JSON, which Envoy parses more slowly "
             "than protobuf), alternating with meshd's edits: Envoy's own apply time with no "
             "control plane. meshd's time includes its file watcher's "
             f"50 ms settle and {args.debounce_after or '100 ms'} debounce (`--debounce-after`), "
             "waits by design" + beyond_waits(args, m) + ".")
    dm = durations.get("meshd")
    if dm:
        L.append("")
        L.append(f"Envoy's own `rds.{ROUTE}.update_duration` (time inside the update, since start) "
                 f"on meshd's Envoys: median of their p50s {dm['p50_ms']:.1f} ms, largest "
                 f"{dm['max_ms']:.0f} ms. Not a baseline: Envoy records it for gRPC subscriptions "
                 "only (not for the file one) and in coarse buckets (0, 1, 5, 10 ms, …).")
    return "\n".join(L) + "\n"


def beyond_waits(args, m):
    """What meshd's fastest Envoy took beyond the file watcher's and the debounce's waits."""
    given = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", args.debounce_after or "100ms")
    if not given:
        return ""
    waits = 0.05 + float(given.group(1)) / (1000 if given.group(2) == "ms" else 1)
    beyond = m["per_envoy_median_s"]["fastest"] - waits
    return f"; the fastest Envoy's median is {beyond * 1000:.0f} ms beyond them"


def envoy_version(envoy):
    try:
        out = subprocess.run([envoy, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        found = re.search(r"/(\d+\.\d+\.\d+)/", out)
        return found.group(1) if found else "unknown version"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--envoys", type=int, default=30, help="Envoys per side (default 30)")
    p.add_argument("--edits", type=int, default=10, help="VirtualService edits (default 10)")
    p.add_argument("--services", type=int, default=10, help="Services in the mesh (default 10)")
    p.add_argument("--meshd", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target")), "release", "meshd"))
    p.add_argument("--envoy", default=os.environ.get("MESHD_ENVOY",
                                                     os.path.join(CACHE, "bin", "envoy")))
    p.add_argument("--envoy-concurrency", type=int, default=2,
                   help="Envoy worker threads (default 2, as Istio's sidecars)")
    p.add_argument("--debounce-after", help="pass to `meshd serve` (default: meshd's own, 100ms)")
    p.add_argument("--interval", type=float, default=10, help="poll interval, ms (default 10)")
    p.add_argument("--gap", type=float, default=0.5, help="pause after each edit, s (default 0.5)")
    p.add_argument("--timeout", type=float, default=30,
                   help="longest an edit may take to reach every Envoy, s (default 30)")
    p.add_argument("--json", help="write the results as one JSON line to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args()
    args.interval /= 1000
    # The command that repeats the measurement (paths and --json left out).
    command = (f"python3 scripts/bench_envoys.py --envoys {args.envoys} --edits {args.edits} "
               f"--services {args.services}"
               + (f" --debounce-after {args.debounce_after}" if args.debounce_after else ""))
    for what, path in (("meshd", args.meshd), ("Envoy", args.envoy)):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench-envoys: no {what} at {path}")
    if args.envoys < 1 or args.edits < 1 or args.services < 1:
        sys.exit("bench-envoys: --envoys, --edits and --services must be at least 1")

    # SIGTERM (and SIGHUP) unwind like Ctrl-C does, through the `finally` that stops everything.
    def unwind(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, unwind)
    signal.signal(signal.SIGHUP, unwind)

    enter_private_network()
    work = tempfile.mkdtemp(prefix="meshd-bench-envoys.")
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    failed = False
    try:
        outcome = run(args, work)
    except (BenchError, OSError, http.client.HTTPException) as err:
        failed = True
        log(f"failed: {err}")
        meshd_log = os.path.join(work, "meshd.log")
        if os.path.exists(meshd_log):
            log(f"meshd log (last lines):\n{tail(meshd_log)}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        if args.keep or failed:
            log(f"work directory (logs) kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    print(report(args, command, outcome, (load_before, load_after)))
    if args.json:
        line = {
            "bench": "envoys",
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "command": command,
            "envoys": args.envoys, "edits": args.edits, "services": args.services,
            "ratio_until_every_envoy_p50": (outcome["meshd"]["until_every_envoy_s"]["p50"]
                                            / outcome["baseline"]["until_every_envoy_s"]["p50"]),
            **outcome,
            "load_average": [load_before, load_after],
        }
        with open(args.json, "w") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
