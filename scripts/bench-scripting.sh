#!/usr/bin/env bash
# Scripts and transactions, Strata versus redis-server side by side in one run: starts
# `strata serve` (release build, L1 + L3 in a temporary directory) and `redis-server`
# (persistence off) on loopback ports and measures on each
#   - EVALSHA of a small rate-limiter script (INCR + PEXPIRE on first use), redis-benchmark
#     -c 50, random keys, -P 1 and -P 16;
#   - MULTI + SET + INCR + GET + EXEC, 50 connections (strata-bench-tx: redis-benchmark has
#     no transactions),
# alternating between the servers, best of ROUNDS, and prints the Strata/Redis ratios.
# Installs redis-server/redis-tools when missing. Stops what it started (by pid).
#
#   scripts/bench-scripting.sh            # N=100000 ROUNDS=2
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

N=${N:-100000}
ROUNDS=${ROUNDS:-2}
need_redis_tools
cargo build --release --quiet -p strata-server -p strata-tests --bin strata --bin strata-bench-tx

work=$(mktemp -d)
strata_pid=""; redis_pid=""
cleanup() {
  [ -n "$strata_pid" ] && kill "$strata_pid" 2>/dev/null && wait "$strata_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
SP=$(free_port); AP=$(free_port); RP=$(free_port)
RUST_LOG=warn target/release/strata serve --data-dir "$work/strata-data" \
  --resp-listen "127.0.0.1:$SP" --admin-listen "127.0.0.1:$AP" >"$work/strata.log" 2>&1 &
strata_pid=$!
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_port "$SP"; wait_port "$RP"

LIMITER="local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end if n > tonumber(ARGV[1]) then return 0 end return 1"
SHA=$(redis-cli -p "$RP" script load "$LIMITER")
[ "$(redis-cli -p "$SP" script load "$LIMITER")" = "$SHA" ] || { echo "SCRIPT LOAD differs" >&2; exit 1; }

evalsha() { # port pipeline -> requests/s
  redis-benchmark -p "$1" -n "$N" -c 50 -P "$2" -r 100000 -q \
    evalsha "$SHA" 1 'rl:__rand_int__' 100 60000 2>/dev/null \
    | tr '\r' '\n' | awk -F': ' '/requests per second/{split($2,a," "); v=a[1]} END{print v}'
}
best() { python3 -c "import sys; print(max(float(x) for x in sys.argv[1:]))" "$@"; }

printf '\n%-34s %14s %14s %8s\n' "" "redis-server" "strata" "ratio"
for P in 1 16; do
  r=(); s=()
  for _ in $(seq 1 "$ROUNDS"); do r+=("$(evalsha "$RP" "$P")"); s+=("$(evalsha "$SP" "$P")"); done
  br=$(best "${r[@]}"); bs=$(best "${s[@]}")
  printf '%-34s %14.0f %14.0f %7.2fx\n' "EVALSHA rate limiter -P $P (ops/s)" "$br" "$bs" \
    "$(python3 -c "print($bs/max($br,1))")"
done
r=(); s=()
for _ in $(seq 1 "$ROUNDS"); do
  r+=("$(target/release/strata-bench-tx "$RP" 50 5)"); s+=("$(target/release/strata-bench-tx "$SP" 50 5)")
done
br=$(best "${r[@]}"); bs=$(best "${s[@]}")
printf '%-34s %14.0f %14.0f %7.2fx\n' "MULTI SET INCR GET EXEC (tx/s)" "$br" "$bs" \
  "$(python3 -c "print($bs/max($br,1))")"
