#!/usr/bin/env bash
# `make demo`: meshd serves the bundled example mesh (examples/demo) to a stock Envoy ingress
# gateway; three echo backends play the `reviews` pods. Everything runs on loopback, no root needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE="${MESHD_CACHE:-$HOME/.cache/meshd}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
MESHD="${MESHD_BIN:-$TARGET/debug/meshd}"
ECHO="${MESHD_ECHO_BIN:-$TARGET/debug/meshd-echo}"
ENVOY="${MESHD_ENVOY:-$CACHE/bin/envoy}"
XDS=127.0.0.1:16010
DEBUG=127.0.0.1:16014
GATEWAY=http://127.0.0.1:18080
HOST=reviews.demo.example

for bin in "$MESHD" "$ECHO" "$ENVOY"; do
    [[ -x "$bin" ]] || { echo "demo: $bin is missing; run 'make demo' (it builds and installs what is needed)" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf -- "$work"
}
trap cleanup EXIT
mkdir -p "$work/config"
cp examples/demo/*.yaml "$work/config/"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
wait_for() { # wait_for SECONDS CMD...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { echo "demo: timed out waiting for: $*" >&2; return 1; }
        sleep 0.2
    done
}
# tally N [curl args...]: send N requests through the gateway and count answers per pod.
tally() {
    local n=$1; shift
    for _ in $(seq "$n"); do
        curl -s -H "Host: $HOST" "$@" "$GATEWAY/reviews" | grep -o '"pod":"[^"]*"' | cut -d'"' -f4 || echo "(no answer)"
    done | sort | uniq -c | sed 's/^/    /'
}

step "meshd serves examples/demo (xDS $XDS, debug $DEBUG)"
"$MESHD" serve --config-dir "$work/config" --xds-addr "$XDS" --debug-addr "$DEBUG" >"$work/meshd.log" 2>&1 &
pids+=($!)
wait_for 20 curl -sf "http://$DEBUG/ready"
echo "    ready"

step "three reviews pods (v1, v2, v2) on 127.0.0.11-13:9080"
for pod in reviews-v1-7f9c:127.0.0.11 reviews-v2-5d8b:127.0.0.12 reviews-v2-9k2m:127.0.0.13; do
    "$ECHO" --name "${pod%%:*}" --namespace demo --address "${pod##*:}" --http 9080 >"$work/${pod%%:*}.log" 2>&1 &
    pids+=($!)
done

step "a stock Envoy $("$ENVOY" --version | grep -o '1\.[0-9]*\.[0-9]*' | head -1) as the ingress gateway, bootstrapped by meshd"
"$MESHD" bootstrap --node-type router --pod istio-ingressgateway-demo --namespace istio-system \
    --ip 127.0.0.1 --labels istio=ingressgateway,app=istio-ingressgateway --xds-addr "$XDS" \
    --admin-port 16000 -o "$work/gateway.json"
"$ENVOY" -c "$work/gateway.json" --disable-hot-restart -l warning >"$work/envoy.log" 2>&1 &
pids+=($!)
wait_for 30 curl -sf -H "Host: $HOST" "$GATEWAY/reviews"
"$MESHD" proxy-status --debug-addr "$DEBUG" | sed 's/^/    /'

step "100 requests: the VirtualService splits 80/20 between v1 and v2"
tally 100

step "requests as user jason always reach v2"
tally 10 -H "end-user: jason"

step "edit the VirtualService to 20/80 — meshd picks it up without a restart"
sed -i 's/weight: 80}/weight: 1}/; s/weight: 20}/weight: 80}/; s/weight: 1}/weight: 20}/' "$work/config/routing.yaml"
grep -n weight "$work/config/routing.yaml" | sed 's/^/    /'
sleep 1.5
tally 100

step "an unknown host gets 404 from the gateway"
printf '    HTTP %s\n' "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nope.example' "$GATEWAY/")"

step "what the gateway got: meshd proxy-config routes istio-ingressgateway-demo.istio-system"
"$MESHD" proxy-config routes istio-ingressgateway-demo.istio-system --debug-addr "$DEBUG" | sed 's/^/    /'
echo
echo "Gateway Envoy rejected $(curl -s http://127.0.0.1:16000/stats | grep -E 'update_rejected' | awk '{s+=$2} END {print s+0}') config updates."
