#!/usr/bin/env bash
# Strata over RESP versus redis-server, side by side in one run: starts `strata serve`
# (release build, L1 + L3 in a temporary directory) and `redis-server` (persistence off) on
# loopback ports, runs the same redis-benchmark against each, and prints ops/s, p50 and p99
# for both and the Strata/Redis ratio. Installs redis-server/redis-tools when missing.
#
#   scripts/bench-resp.sh                 # -c 50, -P 1 and 16, -d 100 and 1024, SET GET INCR MSET
#   N=200000 KEYSPACE=100000 scripts/bench-resp.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}              # requests per test at -P 1 (x5 at -P 16)
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
TESTS=${TESTS:-set,get,incr,mset}
STRATA_PORT=${STRATA_PORT:-16390}
ADMIN_PORT=${ADMIN_PORT:-19390}
REDIS_PORT=${REDIS_PORT:-16391}

. scripts/lib.sh
need_redis_tools

cargo build --release --quiet -p strata-server
work=$(mktemp -d)
strata_pid=""; redis_pid=""
cleanup() {
  [ -n "$strata_pid" ] && kill "$strata_pid" 2>/dev/null && wait "$strata_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn target/release/strata serve --data-dir "$work/strata-data" \
  --resp-listen "127.0.0.1:$STRATA_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  >"$work/strata.log" 2>&1 &
strata_pid=$!
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for port in "$STRATA_PORT" "$REDIS_PORT"; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" ping >/dev/null || { echo "server on $port did not start" >&2; cat "$work"/*.log >&2; exit 1; }
done

echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2), $(nproc) cores, -c $CLIENTS, keyspace $KEYSPACE"
results="$work/results.csv"
for pipeline in 1 16; do
  n=$N; [ "$pipeline" -gt 1 ] && n=$((N * 5))
  for size in 100 1024; do
    for server in strata redis; do
      port=$STRATA_PORT; [ "$server" = redis ] && port=$REDIS_PORT
      redis-cli -p "$port" flushall >/dev/null
      redis-benchmark -p "$port" -c "$CLIENTS" -n "$n" -P "$pipeline" -d "$size" \
        -r "$KEYSPACE" -t "$TESTS" --csv 2>/dev/null |
        sed "s/^/$server,$pipeline,$size,/" >>"$results"
    done
  done
done
kill -0 "$strata_pid" 2>/dev/null || { echo "strata died during the benchmark" >&2; cat "$work/strata.log" >&2; exit 1; }
python3 scripts/bench-resp-table.py "$results"
