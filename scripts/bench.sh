#!/usr/bin/env bash
# Benchmarks (not tests), one command:
#  (a) in-process p50/p99 of instantiate + call of `hello`, against a bare
#      wasmtime instantiate + call measured in the same run;
#  (b) requests/s and latency of `runtime serve` on /fn/dev/hello against
#      `wasmtime serve -S cli` (wasmtime-cli 48) serving the same component,
#      same load generator (wrk), same concurrency, alternating runs;
#  (c) the token broker against a local fake provider: token-endpoint calls
#      for 100 concurrent executes on an expired token (must be 1), and the
#      p50/p99 of an execute through the broker against a direct HTTP call
#      to the same local API, measured in the same run.
# Everything listens on 127.0.0.1 only. Tunables: DURATION (s), CONNS, THREADS, ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
RT_ADDR=127.0.0.1:18181
WT_ADDR=127.0.0.1:18182

ensure_wasm_target
build_guests functions
HELLO=target/wasm32-wasip2/release/hello.wasm

echo "==> (a) in-process"
cargo bench -p runtime --bench invoke --locked --quiet

echo "==> (c) token broker"
cargo bench -p runtime --bench broker --locked --quiet

echo "==> (b) preparing: release runtime, wasmtime-cli 48, wrk"
cargo build --release -p runtime --locked --quiet
WASMTIME=target/bench-tools/bin/wasmtime
if ! [ -x "$WASMTIME" ]; then
  cargo install wasmtime-cli --version 48.0.8 --locked --root target/bench-tools
fi
if ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

tmp=$(mktemp -d)
cleanup() { kill "${RT_PID:-}" "${WT_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "server at $1 did not come up" >&2; return 1
}

export RUNTIME_ADMIN_KEY=bench-admin-key-0123456789abcdef
RUNTIME_MASTER_KEY=$(target/release/runtime keygen) RUST_LOG=warn \
  target/release/runtime serve --listen "$RT_ADDR" --data-dir "$tmp/data" --app dev >"$tmp/runtime.log" 2>&1 &
RT_PID=$!
wait_for "http://$RT_ADDR/healthz"
target/release/runtime deploy "$HELLO" --name hello --url "http://$RT_ADDR" --app dev >/dev/null
"$WASMTIME" serve -S cli --addr "$WT_ADDR" "$HELLO" >"$tmp/wasmtime.log" 2>&1 &
WT_PID=$!
wait_for "http://$WT_ADDR/"

RT_URL="http://$RT_ADDR/fn/dev/hello"
WT_URL="http://$WT_ADDR/"
curl -fsS "$RT_URL" >/dev/null && curl -fsS "$WT_URL" >/dev/null

# wrk output -> "rps p50_ms p99_ms"
measure() {
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    $1=="50%" { p50=ms($2) } $1=="99%" { p99=ms($2) }
    /Non-2xx/ { bad=$NF }
    END { if (bad > 0) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 } printf "%s %s %s\n", rps, p50, p99 }'
}

echo "==> warming up"
wrk -t"$THREADS" -c"$CONNS" -d2s "$RT_URL" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s "$WT_URL" >/dev/null

rt_all=(); wt_all=()
for round in $(seq 1 "$ROUNDS"); do
  rt=$(measure "$RT_URL"); wt=$(measure "$WT_URL")
  echo "round $round: runtime serve: $rt | wasmtime serve: $wt   (req/s p50_ms p99_ms)"
  rt_all+=("$rt"); wt_all+=("$wt")
done

printf '%s\n' "${rt_all[@]}" >"$tmp/rt"; printf '%s\n' "${wt_all[@]}" >"$tmp/wt"
paste "$tmp/rt" "$tmp/wt" | awk -v c="$CONNS" -v t="$THREADS" -v d="$DURATION" '
  { rr+=$1; rp50+=$2; rp99+=$3; wr+=$4; wp50+=$5; wp99+=$6; n++ }
  END {
    printf "\n(b) hello over HTTP, wrk %d threads, %d connections, %ds x %d rounds each, 127.0.0.1\n", t, c, d, n
    printf "%-22s %12s %10s %10s\n", "", "req/s", "p50 ms", "p99 ms"
    printf "%-22s %12.0f %10.2f %10.2f\n", "runtime serve", rr/n, rp50/n, rp99/n
    printf "%-22s %12.0f %10.2f %10.2f\n", "wasmtime serve -S cli", wr/n, wp50/n, wp99/n
    printf "ratio runtime/wasmtime: throughput %.2fx (target >= 1.0x), p50 latency %.2fx\n", rr/wr, (rp50/n)/(wp50/n)
  }'
