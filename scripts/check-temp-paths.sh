#!/usr/bin/env bash
# Fails when code names a path in the shared temporary directory itself (`temp_dir().join(..)`,
# a literal `/tmp/...`): another local user can create such a path first — a symlink, or a
# directory of their own — and have meshd or its tests write there. Temporary files and
# directories come from the `tempfile` crate (exclusive creation, unpredictable names) or
# `mktemp`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

found=$(git ls-files -co --exclude-standard -- '*.rs' '*.sh' '*.py' 'Makefile' |
    grep -v '^scripts/check-temp-paths.sh$' |
    xargs grep -nE 'temp_dir\(\)[[:space:]]*\.join|["'"'"' ]/tmp/' || true)
if [[ -n "$found" ]]; then
    echo "check-temp-paths: predictable temporary paths (use tempfile or mktemp):" >&2
    echo "$found" >&2
    exit 1
fi
