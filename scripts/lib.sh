# Shared by scripts/dev.sh and scripts/test.sh. Source it from the repo root.

# Installs what building guest components needs: the wasm32-wasip2 target
# through rustup (bounded, so a hung download cannot eat a CI run), else
# Debian's Rust toolchain that builds std for wasm itself
# (see shared notes: guest-toolchain.md).
ensure_wasm_target() {
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    GUEST_MODE=rustup
    return
  fi
  echo "==> installing the wasm32-wasip2 target (rustup, at most 5 minutes)"
  if timeout 300 rustup target add wasm32-wasip2; then
    GUEST_MODE=rustup
    return
  fi
  echo "==> rustup could not install the target; using Debian's toolchain with build-std"
  if ! [ -x /usr/bin/cargo ] || ! [ -d /usr/lib/wasm32-wasi ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src lld-19 wasi-libc
  fi
  GUEST_MODE=debian
}

# Builds every crate of the wasm workspace in $1 (release, wasm32-wasip2)
# into the shared target/ directory. Cargo skips guests that did not change.
build_guests() {
  local dir=$1
  echo "==> building guest components in $dir"
  if [ "${GUEST_MODE:-rustup}" = rustup ]; then
    (cd "$dir" && cargo build --release --quiet)
  else
    (cd "$dir" && PATH=/usr/lib/llvm-19/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
      RUSTFLAGS="-L /usr/lib/wasm32-wasi" /usr/bin/cargo build --release --quiet \
      -Zbuild-std=std,panic_abort --target wasm32-wasip2)
  fi
}

# Installs the npm dependencies of tests/oauth-peer (oauth2-mock-server, an
# independent OAuth 2.0 server the end-to-end tests run against) with
# `npm ci`, only when node_modules is missing or older than package-lock.json.
ensure_oauth_peer() {
  local dir=tests/oauth-peer
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: the end-to-end tests need Node.js (20 or newer) and npm to run $dir (oauth2-mock-server); install them and rerun" >&2
    return 1
  fi
  if [ -f "$dir/node_modules/.package-lock.json" ] &&
    ! [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    return 0
  fi
  echo "==> installing the OAuth test peer in $dir (npm ci)"
  (cd "$dir" && npm ci --no-audit --no-fund)
}

# GitHub's official OpenAPI description (npm @octokit/openapi, pinned by the
# lockfile in tests/openapi), which the catalog test checks the GitHub tools
# against.
ensure_openapi_descriptions() {
  local dir=tests/openapi
  if [ -f "$dir/node_modules/.package-lock.json" ] &&
    ! [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    return 0
  fi
  echo "==> installing providers' API descriptions in $dir (npm ci)"
  (cd "$dir" && npm ci --no-audit --no-fund)
}
