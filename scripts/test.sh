#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the wasm target,
# builds the example functions and test guests from source, runs every Rust
# test (unit, component and end-to-end against the real binary), then checks
# formatting and lints.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/postgres.sh

ensure_wasm_target
build_guests functions
build_guests tests/guests
ensure_oauth_peer
ensure_openapi_descriptions
export CATALOG_REQUIRE_OPENAPI=1
# A real PostgreSQL server on 127.0.0.1 for the data connector tests.
ensure_postgres

echo "==> cargo test"
# The end-to-end tests run the real `runtime` binary; cargo only builds a
# package's binary for that package's own tests, so build it first (same
# profile as the tests: nothing is compiled twice).
cargo build -p runtime --locked
results=$(mktemp)
trap 'rm -f "$results"; stop_postgres' EXIT
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$results"

echo "==> unit tests of the example functions (run natively)"
host=$(rustc -vV | sed -n 's/^host: //p')
(cd functions && cargo test --locked --target "$host") 2>&1 | tee -a "$results"

echo "==> cargo fmt --check and cargo clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

# One closing line over every test binary and doc-test run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$results"
