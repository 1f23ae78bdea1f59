#!/usr/bin/env bash
# Prints the Envoy binary meshd's tests and demos use: $MESHD_ENVOY if set, else the one
# `make test-deps` links into the cache. Fails (rather than printing a guess) when neither exists,
# so callers can write `envoy="$(scripts/envoy-path.sh)"` under `set -e`.
set -euo pipefail

envoy="${MESHD_ENVOY:-${MESHD_CACHE:-$HOME/.cache/meshd}/bin/envoy}"
if [[ ! -x "$envoy" ]]; then
    echo "envoy-path: no Envoy at $envoy; run \`make test-deps\`" >&2
    exit 1
fi
echo "$envoy"
