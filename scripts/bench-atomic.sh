#!/usr/bin/env bash
# A 3-node Strata cluster against a Redis Cluster, side by side in one run: redis-benchmark
# INCR, `SET key v NX`, SET and GET (-c 50, -P 1 and -P 16, random keys, 100-byte values)
# against a Redis Cluster of 3 masters and 3 replicas on this machine (redis-benchmark
# --cluster), against node 1 of cluster/local.sh (replication factor 2, every write executed
# at the key's primary) through its plain port, and against the same cluster through its
# cluster ports (redis-benchmark --cluster: each key sent to its primary). Prints the
# throughput and both ratios. TESTS="incr setnx set get" picks the commands; SETTLE_SECS
# waits that long after the Strata cluster is up (32: past its 30 s hand-off window).
# Starts and stops everything it runs (by pid). A few minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
N=${N:-100000}
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  cluster/local.sh down >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# Redis Cluster: six instances, three masters with a replica each (a Redis Cluster node also
# listens on its port + 10000, so its port must be at most 55535).
cluster_port() {
  python3 -c '
import socket
for p in range(30000, 55000, 7):
    ok = True
    for q in (p, p + 10000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", q))
        except OSError:
            ok = False
        s.close()
    if ok:
        print(p); break'
}
RC=()
for i in 1 2 3 4 5 6; do
  p=$(cluster_port)
  while printf '%s\n' "${RC[@]:-}" | grep -qx "$p"; do p=$((p + 1)); done
  mkdir -p "$TMP/rc$i"
  (cd "$TMP/rc$i" && exec redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --save "" --appendonly no >/dev/null 2>&1) &
  PIDS+=($!)
  RC+=("$p")
done
for p in "${RC[@]}"; do wait_port "$p"; done
redis-cli --cluster create $(for p in "${RC[@]}"; do printf '127.0.0.1:%s ' "$p"; done) \
  --cluster-replicas 1 --cluster-yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -p "${RC[0]}" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.2
done

cluster/local.sh up >/dev/null
wait_port 6381
wait_port 7381
# SETTLE_SECS=32: past the cluster's hand-off window (scripts/lib.sh, fresh_cluster).
sleep "${SETTLE_SECS:-0}"

bench() { # port pipeline incr|setnx|set|get [--cluster] -> requests/s (empty when it failed)
  # In --cluster mode redis-benchmark replaces `{tag}` by a tag of each master, so the keys
  # spread over the masters; through a plain port the keys carry no tag (a literal `{tag}`
  # would put them all in one slot).
  local port=$1 pipe=$2 what=$3; shift 3
  local key='lock:__rand_int__'
  [ "${1:-}" = --cluster ] && key='lock:{tag}:__rand_int__'
  case "$what" in
    setnx)
      redis-benchmark -p "$port" "$@" -n "$N" -c 50 -P "$pipe" -r 100000 -q \
        set "$key" x NX 2>/dev/null ;;
    *)
      redis-benchmark -p "$port" "$@" -n "$N" -c 50 -P "$pipe" -r 100000 -d 100 -q \
        -t "$what" 2>/dev/null ;;
  esac | tr '\r' '\n' | awk -F': ' '/requests per second/{split($2,a," "); v=a[1]} END{print v}' || true
}

TESTS=${TESTS:-incr setnx set get}
printf '\nredis-benchmark -n %s -c 50 -r 100000 -d 100 (requests/s), best of 2 rounds:\n' "$N"
printf '%-4s %-7s %14s %16s %8s %18s %8s\n' "-P" "command" "Redis Cluster" "strata node 1" "ratio" "strata --cluster" "ratio"
for P in 1 16; do
  for what in $TESTS; do
    best_r=0; best_s=0; best_c=0
    for _ in 1 2; do
      r=$(bench "${RC[0]}" "$P" "$what" --cluster)
      s=$(bench 6381 "$P" "$what")
      c=$(bench 7381 "$P" "$what" --cluster)
      best_r=$(python3 -c "print(max($best_r, ${r:-0}))")
      best_s=$(python3 -c "print(max($best_s, ${s:-0}))")
      best_c=$(python3 -c "print(max($best_c, ${c:-0}))")
    done
    printf '%-4s %-7s %14s %16s %8s %18s %8s\n' "$P" "$what" "$best_r" "$best_s" \
      "$(python3 -c "print(f'{$best_s/max($best_r,1):.2f}x')")" "$best_c" \
      "$(python3 -c "print(f'{$best_c/max($best_r,1):.2f}x')")"
  done
done
