#!/usr/bin/env bash
# `make test` after `make lint`: every test of the workspace, one timed phase per group (unit
# tests, doc tests, each integration test binary), all with the features `--workspace` resolves,
# so nothing is rebuilt between groups.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_test=(cargo test --locked --workspace)

scripts/timed "test: unit (lib, bins)" "${cargo_test[@]}" --lib --bins
scripts/timed "test: doc" "${cargo_test[@]}" --doc
# A test binary is tests/NAME.rs, or tests/NAME/main.rs with modules beside it.
for file in */tests/*.rs */tests/*/main.rs programs/*/tests/*.rs; do
    package_dir=${file%/tests/*}
    name=$(basename "$file" .rs)
    [[ $name == main ]] && name=$(basename "$(dirname "$file")")
    scripts/timed "test: $package_dir/$name" "${cargo_test[@]}" --test "$name"
done
