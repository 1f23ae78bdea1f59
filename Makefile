# meshd developer and CI entry points. `make test` is what CI runs (.ci/run); it needs only Rust,
# Python and apt on the machine: `test-deps` installs the rest.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
# Cargo serialises on its own lock anyway; parallel make would only interleave the output.
.NOTPARALLEL:

MESHD_CACHE ?= $(HOME)/.cache/meshd
CARGO_TARGET_DIR ?= $(MESHD_CACHE)/target
MESHD_ENVOY ?= $(MESHD_CACHE)/bin/envoy
CARGO ?= cargo
export MESHD_CACHE CARGO_TARGET_DIR MESHD_ENVOY

.PHONY: help build test-deps lint test fuzz demo image bench bench-check fmt clean-cache

help:
	@echo "make build        build every binary of the workspace (debug)"
	@echo "make test-deps    install Envoy 1.40 and the tools the tests use"
	@echo "make lint         rustfmt, clippy -D warnings, no import cycles, oversized files or predictable temp paths"
	@echo "make test         test-deps, build, lint, then every test (root-needing ones too)"
	@echo "make fuzz         a long differential campaign against Envoy, then each libFuzzer target"
	@echo "                  (MESHD_FUZZ_SECONDS=600, FUZZ_SECONDS=60 each; scripts/fuzz.sh)"
	@echo "make demo         install Envoy, build meshd and the echo backends, run scripts/demo.sh"
	@echo "make image        meshd's OCI image from Debian packages (scripts/build-image.sh; root)"
	@echo "make bench        release build, then scripts/bench.sh (writes BENCHMARKS.md)"
	@echo "make bench-check  short bench; fails when a figure is >25% worse than committed"
	@echo "make fmt          format the workspace"
	@echo "make clean-cache  remove $(MESHD_CACHE) and $(CARGO_TARGET_DIR)"

build:
	$(CARGO) build --workspace --bins

test-deps:
	scripts/install-test-deps.sh

# Every crate's `src/`: the cycle check runs on all of them.
CRATE_SRCS := proto/src ca/src control-plane/src control-plane/model/src \
	control-plane/translate/src control-plane/xds/src control-plane/kube/src tests/src

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-module-cycles.py --self-test
	python3 scripts/check-module-cycles.py $(CRATE_SRCS)
	scripts/check-file-sizes.sh
	scripts/check-temp-paths.sh

test: test-deps build lint
	$(CARGO) test --workspace

fuzz: test-deps
	scripts/fuzz.sh

# Only what the demo runs: Envoy, meshd and the echo backends (no kube-apiserver, no test tools).
demo:
	scripts/install-test-deps.sh --demo
	$(CARGO) build -p meshd --bin meshd -p meshd-tests --bin meshd-echo
	bash scripts/demo.sh

image: test-deps
	scripts/build-image.sh

bench: test-deps
	bash scripts/bench.sh

bench-check: test-deps
	bash scripts/bench-check.sh

fmt:
	$(CARGO) fmt --all

clean-cache:
	rm -rf -- "$(CARGO_TARGET_DIR)" "$(MESHD_CACHE)"
