#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the wasm target,
# builds the example functions and test guests from source, runs every Rust
# test (unit, component and end-to-end against the real binary), then checks
# formatting and lints.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_wasm_target
build_guests functions
build_guests tests/guests

echo "==> cargo test"
cargo test --workspace --locked

echo "==> cargo fmt --check and cargo clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
echo "all checks passed"
