#!/usr/bin/env bash
# Client-side caching, side by side in one run: a three-node Strata cluster
# (`cluster/local.sh up`, release build) and redis-server (persistence off) on loopback.
#
#   1. Throughput: one redis-py client (RESP3), Zipf(1.0) over 10,000 keys, 95 % GET and
#      5 % SET through the same client (then reads only), for SECONDS each: against redis-server, against
#      Strata's node 1, and against node 1 with redis-py's client-side cache
#      (`cache_config`). Prints reads/s and read p50/p99 as the client sees them.
#      (redis-py refuses its client-side cache on a redis-server older than 7.4, which is
#      what Debian ships here: that cell is marked n/a.)
#   2. Invalidation delay: a RESP3 tracking client on node 1 reads a key, another client
#      SETs it through node 3 (on redis-server: the same server): time from the SET being
#      sent to the invalidate push arriving, p50/p99 over N keys.
#
#   scripts/bench-tracking.sh
#   SECONDS_EACH=20 N=3000 scripts/bench-tracking.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${SECONDS_EACH:-10}
N=${N:-1000}
REDIS_PORT=${REDIS_PORT:-16394}

. scripts/lib.sh
need_redis_tools
need_redis_py

work=$(mktemp -d)
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  cluster/local.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cluster/local.sh up >/dev/null
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

py() { python3 scripts/bench_tracking.py "$@"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2), redis-py $(python3 -c 'import redis; print(redis.__version__)'), $(nproc) cores; ${SECONDS_EACH}s each"
echo
row() { printf '%-34s %10s %9s %9s\n' "$1" "$(field "$2" reads_per_s)" "$(field "$2" p50_us)" "$(field "$2" p99_us)"; }
for writes in 0.05 0; do
  echo "Zipf reads ($(python3 -c "print(round(100 - $writes * 100))") % GET, $(python3 -c "print(round($writes * 100))") % SET), one redis-py client:"
  printf '%-34s %10s %9s %9s\n' "target" "reads/s" "p50 µs" "p99 µs"
  redis_plain=$(py throughput "$REDIS_PORT" "$REDIS_PORT" "$SECONDS_EACH" 0 "$writes")
  strata_plain=$(py throughput 6381 6381 "$SECONDS_EACH" 0 "$writes")
  strata_cached=$(py throughput 6381 6381 "$SECONDS_EACH" 1 "$writes")
  row "redis-server" "$redis_plain"
  printf '%-34s %10s %9s %9s\n' "redis-server + client cache" "n/a" "n/a" "n/a"
  row "strata node 1 (of 3)" "$strata_plain"
  row "strata node 1 + client cache" "$strata_cached"
  python3 - "$redis_plain" "$strata_plain" "$strata_cached" <<'PY'
import json, sys
r, s, c = (json.loads(a) for a in sys.argv[1:])
print("ratios: strata/redis %.2fx, strata+cache/redis %.2fx, strata+cache/strata %.2fx"
      % (s["reads_per_s"] / r["reads_per_s"], c["reads_per_s"] / r["reads_per_s"],
         c["reads_per_s"] / s["reads_per_s"]))
PY
  echo
done
echo
echo "Invalidation push delay ($N keys): write -> push at the tracking client"
printf '%-34s %9s %9s\n' "" "p50 µs" "p99 µs"
d_redis=$(py delay "$REDIS_PORT" "$REDIS_PORT" "$N")
d_strata=$(py delay 6381 6383 "$N")
printf '%-34s %9s %9s\n' "redis-server (same server)" "$(field "$d_redis" p50_us)" "$(field "$d_redis" p99_us)"
printf '%-34s %9s %9s\n' "strata (write on node 3)" "$(field "$d_strata" p50_us)" "$(field "$d_strata" p99_us)"
