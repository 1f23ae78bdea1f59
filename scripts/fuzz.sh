#!/usr/bin/env bash
# `make fuzz`: a long differential campaign of meshd against the real Envoy (the `meshd-fuzz`
# binary, a fresh seed unless MESHD_FUZZ_SEED is set), then each libFuzzer target in fuzz/ for
# FUZZ_SECONDS. Installs cargo-fuzz into the cache when it is missing. cargo-fuzz passes rustc
# `-Z` flags (sanitizer coverage), which a stable toolchain takes with RUSTC_BOOTSTRAP=1.
#
# MESHD_FUZZ_SECONDS  the differential campaign's wall time (default 600)
# FUZZ_SECONDS        each libFuzzer target's wall time (default 60)
# FUZZ_RSS_LIMIT_MB   libFuzzer's memory bound per target (default 2048)
# FUZZ_TARGETS        the targets to run (default: all of fuzz/Cargo.toml's)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESHD_CACHE=${MESHD_CACHE:-$HOME/.cache/meshd}
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MESHD_CACHE/target}
CAMPAIGN_SECONDS=${MESHD_FUZZ_SECONDS:-600}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}
FUZZ_TARGETS=${FUZZ_TARGETS:-documents xds_sotw xds_delta admission}
CARGO_FUZZ_VERSION=0.13.2
TOOLS=$MESHD_CACHE/tools
export PATH="$TOOLS/bin:$PATH" CARGO_TARGET_DIR

if [[ "$(cargo fuzz --version 2>/dev/null)" != *"$CARGO_FUZZ_VERSION"* ]]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
fi

failed=()

echo "fuzz: differential campaign against Envoy for ${CAMPAIGN_SECONDS}s"
if ! cargo run -q -p meshd-tests --bin meshd-fuzz -- --seconds "$CAMPAIGN_SECONDS"; then
    failed+=("differential campaign")
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
# Safe Rust only (unsafe_code is denied): coverage-guided without AddressSanitizer, which
# would only slow the run down. The fuzz build shares the cache's target directory.
fuzz_flags=(--sanitizer none --target-dir "$CARGO_TARGET_DIR")
cargo fuzz build "${fuzz_flags[@]}"
for target in $FUZZ_TARGETS; do
    echo "fuzz: $target for ${FUZZ_SECONDS}s"
    mkdir -p "corpus/$target"
    if ! cargo fuzz run "${fuzz_flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb="$FUZZ_RSS_LIMIT_MB" \
        -timeout=10 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no failures"
