#!/usr/bin/env bash
# The cluster's benchmarks, in one run:
#  1. criterion (crates/strata/benches/cluster.rs): a remote L2 hit over loopback beside a
#     bare redis-rs GET on redis-server, p50/p99; invalidation propagation across 3 nodes.
#  2. redis-benchmark (GET and SET, -c 50, -P 1 and -P 16) against one node of a 3-node
#     cluster (cluster/local.sh), a single node, and redis-server, side by side; prints the
#     throughput and the ratios.
# Starts and stops everything it runs (by pid). About 4 minutes after the builds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
cargo bench --locked -p strata --bench cluster "$@"

cargo build --release --locked -p strata-server
BIN=target/release/strata
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  cluster/local.sh down >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
PIDS+=($!)
SPORT=$(free_port)
"$BIN" serve --resp-listen "127.0.0.1:$SPORT" --admin-listen "127.0.0.1:$(free_port)" --data-dir "$TMP/single" >"$TMP/single.log" 2>&1 &
PIDS+=($!)
cluster/local.sh up >/dev/null
wait_port "$RPORT"; wait_port "$SPORT"; wait_port 6381

run() { # port pipeline -> "set_rps get_rps"
  redis-benchmark -p "$1" -t set,get -n 200000 -c 50 -P "$2" -r 100000 -d 100 -q 2>/dev/null \
    | tr '\r' '\n' | awk '/^SET:/{s=$2} /^GET:/{g=$2} END{print s, g}'
}
printf '\nredis-benchmark -t set,get -n 200000 -c 50 -r 100000 -d 100 (requests/s):\n'
printf '%-4s %-26s %12s %12s %10s %10s\n' "-P" "target" "SET" "GET" "SET/redis" "GET/redis"
for P in 1 16; do
  read -r rs rg <<<"$(run "$RPORT" "$P")"
  read -r ss sg <<<"$(run "$SPORT" "$P")"
  read -r cs cg <<<"$(run 6381 "$P")"
  for row in "redis-server 7|$rs|$rg" "strata, single node|$ss|$sg" "strata, node 1 of 3 (rf 2)|$cs|$cg"; do
    IFS='|' read -r name s g <<<"$row"
    printf '%-4s %-26s %12s %12s %10s %10s\n' "$P" "$name" "$s" "$g" \
      "$(python3 -c "print(f'{$s/$rs:.2f}x')")" "$(python3 -c "print(f'{$g/$rg:.2f}x')")"
  done
  python3 -c "print(f'     cluster node / single node: SET {$cs/$ss:.2f}x, GET {$cg/$sg:.2f}x')"
done
