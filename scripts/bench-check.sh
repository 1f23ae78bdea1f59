#!/usr/bin/env bash
# `make bench-check`: a short `make bench` (one round; isolation, changes with 20 s of churn, CA
# issuance, push throughput), compared against the figures the last full `make bench` committed in
# scripts/bench-figures.json. Fails when any figure both runs produced is more than 25 % worse
# (MESHD_BENCH_CHECK_TOLERANCE, a fraction). Not part of `make test`: benchmarks are noisy, so run
# it on a quiet machine, and rerun before believing a failure.
#
# MESHD_BENCH_MESHD=PATH checks another meshd binary against the same figures (for example the
# unoptimised `target/debug/meshd`, which must fail). Other knobs as for scripts/bench.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOLERANCE="${MESHD_BENCH_CHECK_TOLERANCE:-0.25}"
COMMITTED="$REPO/scripts/bench-figures.json"
[[ -f "$COMMITTED" ]] || { echo "bench-check: $COMMITTED missing: run make bench first" >&2; exit 1; }

OUT="$(mktemp "${TMPDIR:-/tmp}/meshd-bench-check.XXXXXX")"
trap 'rm -f -- "$OUT"' EXIT
MESHD_BENCH_ROUNDS=1 MESHD_BENCH_WRITE=0 MESHD_BENCH_FIGURES_OUT="$OUT" \
    MESHD_BENCH_ONLY="${MESHD_BENCH_ONLY:-rounds isolation churn issuance throughput}" \
    MESHD_BENCH_CHURN_SECS="${MESHD_BENCH_CHURN_SECS:-20}" MESHD_BENCH_EDITS="${MESHD_BENCH_EDITS:-5}" \
    bash "$REPO/scripts/bench.sh" >&2

python3 - "$COMMITTED" "$OUT" "$TOLERANCE" <<'PY'
import json, sys

committed, measured, tolerance = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
old, new = committed["figures"], measured["figures"]
worse = []
print(f"bench-check: against {committed['commit']} of {committed['date']} (tolerance {tolerance:.0%})")
print(f"{'figure':<36} {'committed':>12} {'now':>12}  verdict")
for name in sorted(old.keys() & new.keys()):
    was, now, better = old[name]["value"], new[name]["value"], old[name]["better"]
    # A share of a core measured near zero gets one percentage point of slack.
    slack = 0.01 if name.endswith("_fraction") else 0.0
    if better == "lower":
        bad = now > max(was * (1 + tolerance), was + slack)
    else:
        bad = now < was * (1 - tolerance)
    change = (now / was - 1) if was else 0.0
    verdict = "WORSE" if bad else "ok"
    print(f"{name:<36} {was:>12.4g} {now:>12.4g}  {verdict} ({change:+.0%}, {better} is better)")
    if bad:
        worse.append(name)
missing = sorted(old.keys() - new.keys())
if missing:
    print(f"not measured by the short run: {', '.join(missing)}")
if not old.keys() & new.keys():
    sys.exit("bench-check: no figure in common with the committed ones")
if worse:
    sys.exit(f"bench-check: {len(worse)} figure(s) more than {tolerance:.0%} worse: {', '.join(worse)}")
print("bench-check: every figure within tolerance")
PY
