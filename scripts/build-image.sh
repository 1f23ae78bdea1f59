#!/usr/bin/env bash
# `make image`: meshd's container image as an OCI image layout, from Debian packages alone (no
# registry): a minimal Debian root (debootstrap, cached) with iptables (legacy and nftables) and
# CA certificates, meshd in /usr/local/bin, packed by umoci. The Dockerfile builds the same image
# where base images can be pulled.
#
# MESHD_IMAGE_DIR     where the layout goes (default: $CARGO_TARGET_DIR/image); the image is
#                     `$MESHD_IMAGE_DIR/oci:<version>`
# MESHD_IMAGE_BIN     the meshd binary to pack (default: a release build)
# MESHD_DEBIAN_MIRROR the Debian mirror debootstrap uses
# MESHD_IMAGE_OFFLINE 1: fail instead of downloading when the Debian root is not cached yet
#
# `build-image.sh --rootfs` only prepares the cached Debian root (`make test-deps` does, so the
# image test itself never reaches the network).
#
# Push it with e.g. `skopeo copy oci:target/image/oci:0.1.0 docker://registry.example/meshd:0.1.0`.
# Needs root (debootstrap); `make test-deps` installs debootstrap and umoci.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESHD_CACHE=${MESHD_CACHE:-$HOME/.cache/meshd}
TARGET=${CARGO_TARGET_DIR:-$MESHD_CACHE/target}
OUT=${MESHD_IMAGE_DIR:-$TARGET/image}
MIRROR=${MESHD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=iptables,ca-certificates
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

log() { echo "build-image: $*" >&2; }

ROOTFS_ONLY=0
case "${1:-}" in
    "") ;;
    --rootfs) ROOTFS_ONLY=1 ;;
    *) echo "usage: $0 [--rootfs]" >&2; exit 2 ;;
esac

for tool in debootstrap umoci; do
    command -v "$tool" >/dev/null || { log "needs $tool (make test-deps installs it)"; exit 1; }
done
if [[ $EUID -ne 0 ]]; then
    log "needs root (debootstrap)"
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

# The Debian root, once per suite and package list.
ROOTFS="$MESHD_CACHE/image/rootfs-$SUITE-${PACKAGES//,/-}.tar.gz"
if [[ ! -s "$ROOTFS" ]]; then
    if [[ "${MESHD_IMAGE_OFFLINE:-0}" == 1 ]]; then
        log "no cached Debian root at $ROOTFS and MESHD_IMAGE_OFFLINE=1: run make test-deps"
        exit 1
    fi
    log "debootstrap $SUITE ($PACKAGES) from $MIRROR"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/rootfs" "$MIRROR" >&2
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
    tar -C "$work/rootfs" -czf "$work/rootfs.tar.gz" .
    mv "$work/rootfs.tar.gz" "$ROOTFS"
    rm -rf "$work/rootfs"
fi
if ((ROOTFS_ONLY)); then
    log "ok: $ROOTFS"
    exit 0
fi

BIN=${MESHD_IMAGE_BIN:-}
if [[ -z "$BIN" ]]; then
    log "building meshd (release)"
    cargo build --release -q -p meshd --bin meshd
    BIN=$TARGET/release/meshd
fi
[[ -x "$BIN" ]] || { log "$BIN is not an executable"; exit 1; }

log "packing $OUT/oci:$VERSION"
rm -rf -- "$OUT/oci"
mkdir -p "$OUT"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$VERSION"
umoci unpack --image "$OUT/oci:$VERSION" "$work/bundle" >/dev/null
tar -C "$work/bundle/rootfs" -xzf "$ROOTFS"
install -m 0755 "$BIN" "$work/bundle/rootfs/usr/local/bin/meshd"
umoci repack --image "$OUT/oci:$VERSION" "$work/bundle"
umoci config --image "$OUT/oci:$VERSION" \
    --config.entrypoint /usr/local/bin/meshd --config.cmd serve \
    --config.label "org.opencontainers.image.title=meshd" \
    --config.label "org.opencontainers.image.version=$VERSION"
umoci gc --layout "$OUT/oci"
echo "$OUT/oci:$VERSION"
