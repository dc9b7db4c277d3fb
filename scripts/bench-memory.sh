#!/usr/bin/env bash
# Memory against configuration, and a full SCAN, side by side in one run: `strata serve`
# (release build, L1 only, l1.capacity_bytes = BUDGET) and `redis-server` (maxmemory = BUDGET,
# allkeys-lru), each filled well past its budget with 100-byte, 1 KiB and mixed values.
# Prints the keys each keeps, its RSS (Redis: used_memory_rss) and RSS / budget; then the time
# of a full `SCAN COUNT 1000` of KEYS keys on each. Installs redis-server/redis-tools and
# redis-py when missing.
#
#   scripts/bench-memory.sh                 # BUDGET=64 MiB, SCAN of 1M keys
#   BUDGET_MB=256 KEYS=2000000 scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET_MB=${BUDGET_MB:-64}
KEYS=${KEYS:-1000000}
BASE=${BASE:-16440}

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

budget=$((BUDGET_MB * 1024 * 1024))
start_servers() {
  cat >"$work/strata.toml" <<EOF
[l1]
capacity_bytes = $budget
[l3]
enabled = false
[namespace_defaults]
default_ttl_secs = 0
max_ttl_secs = 0
EOF
  RUST_LOG=warn target/release/strata serve --config "$work/strata.toml" \
    --resp-listen "127.0.0.1:$BASE" --admin-listen "127.0.0.1:$((BASE + 1))" >"$work/s.log" 2>&1 &
  pids+=($!)
  redis-server --port "$((BASE + 2))" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --maxmemory "$budget" --maxmemory-policy allkeys-lru >"$work/r.log" 2>&1 &
  pids+=($!)
  for port in "$BASE" "$((BASE + 2))"; do
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
}
stop_servers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  pids=()
}

echo "budget $BUDGET_MB MiB; redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2); $(nproc) cores"
printf '%-8s %-7s %12s %12s %10s %9s %13s\n' values server keys rss_mib rss/budget idle_mib growth/budget
for kind in 100 1024 mixed; do
  start_servers
  spid=${pids[0]}
  python3 - "$BASE" "$((BASE + 2))" "$kind" "$budget" "$spid" <<'EOF'
import random, sys, redis
sport, rport, kind, budget, spid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
def size(i):
    if kind == "mixed":
        return random.Random(i).choice([16, 100, 1024, 4096])
    return int(kind)
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
idle = {"strata": rss(spid), "redis": int(redis.Redis(port=rport).info("memory")["used_memory_rss"])}
for name, port in (("strata", sport), ("redis", rport)):
    r = redis.Redis(port=port)
    written, i = 0, 0
    while written < 3 * budget:   # three times the budget: both must evict
        p = r.pipeline(transaction=False)
        for _ in range(1000):
            n = size(i)
            p.set(f"key:{i}", b"x" * n)
            written += n + 20
            i += 1
        p.execute()
    keys = r.dbsize()
    if name == "redis":
        used = int(r.info("memory")["used_memory_rss"])
    else:
        used = rss(spid)
    print(f"{kind:<8} {name:<7} {keys:>12,} {used / 2**20:>12.1f} {used / budget:>10.2f} {idle[name] / 2**20:>9.1f} {(used - idle[name]) / budget:>13.2f}")
EOF
  stop_servers
done

[ "${SKIP_SCAN:-0}" = 1 ] && exit 0

# A full SCAN of KEYS keys (16-byte values; budgets large enough to hold them all).
budget=$((1024 * 1024 * 1024))
start_servers
python3 - "$BASE" "$((BASE + 2))" "$KEYS" <<'EOF'
import sys, time, redis
sport, rport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for name, port in (("strata", sport), ("redis", rport)):
    r = redis.Redis(port=port)
    for start in range(0, n, 10000):
        p = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 10000)):
            p.set(f"key:{i}", b"0123456789abcdef")
        p.execute()
    t = time.time()
    seen = sum(1 for _ in r.scan_iter(count=1000))
    took = time.time() - t
    lat = []
    cur = 0
    for _ in range(200):
        t0 = time.perf_counter(); cur, _ = r.scan(cur, count=10); lat.append(time.perf_counter() - t0)
    lat.sort()
    print(f"SCAN {name:<7} {seen:>9,} keys in {took:6.2f} s; one SCAN COUNT 10: p50 {lat[100]*1000:.2f} ms, p99 {lat[198]*1000:.2f} ms")
EOF
