#!/usr/bin/env bash
# Pub/sub on Strata versus redis-server, side by side in one run: starts `strata serve`
# (release build, L1 + L3 in a temporary directory) and `redis-server` (persistence off) on
# loopback ports, each with one subscriber (redis-cli), and measures PUBLISH throughput
# (redis-benchmark, -c 50, -P 1 and 16) and the delay from PUBLISH to the subscriber
# (redis-py, 3000 messages), printing Strata/Redis ratios. Installs what it needs.
#
#   scripts/bench-pubsub.sh
#   N=400000 scripts/bench-pubsub.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-200000}
STRATA_PORT=${STRATA_PORT:-16392}
ADMIN_PORT=${ADMIN_PORT:-19392}
REDIS_PORT=${REDIS_PORT:-16393}

. scripts/lib.sh
need_redis_tools
need_redis_py

cargo build --release --quiet -p strata-server
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn target/release/strata serve --data-dir "$work/strata-data" \
  --resp-listen "127.0.0.1:$STRATA_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  >"$work/strata.log" 2>&1 &
pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
for port in "$STRATA_PORT" "$REDIS_PORT"; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" ping >/dev/null || { echo "server on $port did not start" >&2; cat "$work"/*.log >&2; exit 1; }
  redis-cli -p "$port" subscribe bench >/dev/null 2>&1 &
  pids+=($!)
done
sleep 0.5

cat >"$work/lat.py" <<'PY'
import sys, time, threading, redis
port, n = int(sys.argv[1]), 3000
r = redis.Redis(port=port); p = r.pubsub(); p.subscribe("lat")
while True:
    m = p.get_message(timeout=1)
    if m and m["type"] == "subscribe":
        break
delays = []
def sub():
    while len(delays) < n:
        m = p.get_message(timeout=5)
        if m and m["type"] == "message":
            delays.append(time.perf_counter_ns() - int(m["data"]))
t = threading.Thread(target=sub); t.start()
pub = redis.Redis(port=port)
for i in range(n):
    pub.publish("lat", str(time.perf_counter_ns()))
    if i % 100 == 0:
        time.sleep(0.001)
t.join()
delays.sort()
print("%.0f %.0f" % (delays[n // 2] / 1000, delays[n * 99 // 100] / 1000))
PY

echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2), $(nproc) cores, one subscriber each"
best() { sort -n | tail -1; }
for pipeline in 1 16; do
  declare -A ops=()
  for round in 1 2; do
    for server in redis strata; do
      port=$STRATA_PORT; [ "$server" = redis ] && port=$REDIS_PORT
      r=$(redis-benchmark -p "$port" -c 50 -n "$N" -P "$pipeline" --csv publish bench hello 2>/dev/null |
        tail -1 | cut -d, -f2 | tr -d '"')
      ops[$server]=$(printf '%s\n%s\n' "${ops[$server]:-0}" "$r" | best)
    done
  done
  awk -v p="$pipeline" -v s="${ops[strata]}" -v r="${ops[redis]}" \
    'BEGIN { printf "PUBLISH -P %-2s  strata %9.0f/s  redis %9.0f/s  ratio %.2f\n", p, s, r, s / r }'
  unset ops
done
for server in redis strata; do
  port=$STRATA_PORT; [ "$server" = redis ] && port=$REDIS_PORT
  read -r p50 p99 < <(python3 "$work/lat.py" "$port")
  echo "delivery $server: p50 ${p50} us, p99 ${p99} us"
done
