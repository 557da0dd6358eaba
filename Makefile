# The two commands README.md promises: `make run` (the main job) and `make test` (everything CI
# checks). Both bootstrap libtorch on first use; nothing else needs to be installed by hand.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := . scripts/env.sh &&
CARGO_FLAGS := --release --locked
# Lints and tests build in the dev profile (opt-level 1, see Cargo.toml): one build of the
# dependency tree for both, a fraction of the release build's time.
CHECK_FLAGS := --locked
# BUILD_TIMINGS=--timings makes `make lint` write cargo's per-crate timing report
# ($CARGO_TARGET_DIR/cargo-timings/).
BUILD_TIMINGS ?=
# Each step of `make lint` and `make test` is timed; .ci/run prints the phases at its end.
TIMED := scripts/timed
# Clippy lints the workspace while `make lint` builds it (see scripts/clippy-rustc), so lints,
# tests and binaries share one build of the dependency tree.
LINT_ENV := export RUSTC_WORKSPACE_WRAPPER="$(CURDIR)/scripts/clippy-rustc" &&
# Extra arguments for `make run`, e.g. make run ARGS="--clients 4 --steps 300 --preset 20m"
# (`demeter local` runs 3 clients unless told otherwise).
ARGS ?=

.PHONY: bootstrap run run-chain test lint images bench bench-byzantine bench-spot-check bench-verification-cost bench-operator fuzz
bootstrap:
	scripts/bootstrap.sh

run: bootstrap
	$(ENV) cargo run $(CARGO_FLAGS) --bin demeter -- local $(ARGS)

# The main job with the coordinator program on a local Solana chain (demeter-localnet: agave's
# bank behind JSON-RPC, a development binary from e2e/, kept out of demeter).
run-chain: bootstrap
	$(ENV) cargo build $(CARGO_FLAGS) -p demeter-e2e --bin demeter-localnet
	$(ENV) cargo run $(CARGO_FLAGS) --bin demeter -- local --chain $(ARGS)

lint: bootstrap
	$(TIMED) fmt cargo fmt --all --check
	$(ENV) $(TIMED) "manifests: deploy/" "$$DEMETER_PYTHON" -m kubernetes_validate --kubernetes-version 1.33.0 --strict --quiet deploy/crds/*.yaml deploy/operator/*.yaml
	$(ENV) $(LINT_ENV) $(TIMED) "build + clippy (workspace, all targets)" cargo build $(CHECK_FLAGS) $(BUILD_TIMINGS) --workspace --all-targets
	$(ENV) $(TIMED) "manifests: rendered examples" scripts/check-rendered.sh
	$(ENV) $(TIMED) "chart: lint, render, validate, agree" scripts/check-chart.sh

test: lint
	$(ENV) $(LINT_ENV) scripts/test.sh
	$(ENV) $(TIMED) "images: built and run" scripts/images.sh check

# The operator and trainer images with the local Docker engine (release binaries; tagged with
# the crate version). IMAGES="operator" builds one; the table gives sizes and build times.
IMAGES ?= operator trainer
images: bootstrap
	$(ENV) scripts/images.sh build $(IMAGES)

# Benchmarks print markdown tables; docs/benchmarks.md records them with these commands.
# `--workspace --bench NAME` resolves features as the test build does, so it reuses the build;
# `-p demeter-trainer` alone would rebuild the Solana tree with other features.
bench: bootstrap
	$(ENV) cargo bench --locked --workspace --bench step_time
	$(ENV) cargo bench --locked --workspace --bench learning_quality
	$(ENV) cargo bench --locked --workspace --bench loopback

# 1,000 TrainingRuns against the in-memory API server: reconcile latency and operator RSS.
# What dishonest clients do to a run, by aggregation rule (docs/verification.md).
bench-byzantine: bootstrap
	$(ENV) cargo bench --locked --workspace --bench byzantine

# What a spot-check tolerance must allow: honest and cheating senders' distance from their recomputes.
bench-spot-check: bootstrap
	$(ENV) cargo bench --locked --workspace --bench spot_check

# What verifying costs a client a round, part by part and under several run settings (docs/verification.md).
bench-verification-cost: bootstrap
	$(ENV) cargo bench --locked --workspace --bench verification_cost

bench-operator:
	$(ENV) cargo bench --locked -p demeter-operator --bench scale

fuzz: bootstrap
	$(ENV) cargo bench --locked --workspace --bench payload_fuzz
