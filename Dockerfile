# meshd's container image, for machines that can pull base images (`docker build -t meshd .`).
# Where no registry is reachable, `make image` (scripts/build-image.sh) builds the same image from
# Debian packages alone. One image serves both roles: `meshd serve` in the control plane, and the
# injected init containers (`meshd iptables`, `meshd bootstrap`), hence iptables in both its legacy
# and nftables variants (Debian's package ships both).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meshd --bin meshd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/meshd /usr/local/bin/meshd
ENTRYPOINT ["/usr/local/bin/meshd"]
CMD ["serve"]
