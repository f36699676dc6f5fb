#!/usr/bin/env bash
# Local development: builds the example functions and runs `runtime serve --dev`
# (app `dev`, embedded store in .runtime-data/, examples deployed).
# Extra arguments go to `runtime serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_wasm_target
build_guests functions
cargo build -p runtime --locked --quiet
exec target/debug/runtime serve --dev "$@"
