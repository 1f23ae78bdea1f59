#!/usr/bin/env bash
# Fails when a source file outside tests is over 800 lines, or `meshd serve`'s module directory
# over 2,500: past that, a file does more than one thing. Test code (`tests/` directories,
# `tests.rs` files, the meshd-tests crate) is exempt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MAX_FILE=800
MAX_SERVE=2500
status=0
while IFS= read -r file; do
    lines=$(wc -l <"$file")
    if ((lines > MAX_FILE)); then
        echo "check-file-sizes: $file has $lines lines (at most $MAX_FILE outside tests)" >&2
        status=1
    fi
done < <(git ls-files -co --exclude-standard -- '*.rs' |
    grep -v -E '(^|/)tests/|(^|/)tests\.rs$' || true)
serve=$(find control-plane/src/serve -name '*.rs' ! -name tests.rs ! -path '*/tests/*' -print0 |
    xargs -0 cat | wc -l)
if ((serve > MAX_SERVE)); then
    echo "check-file-sizes: control-plane/src/serve/ has $serve lines (at most $MAX_SERVE)" >&2
    status=1
fi
exit "$status"
