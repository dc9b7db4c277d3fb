#!/usr/bin/env bash
# How long a change takes to be seen on every process of cluster/local.sh, under write load
# (issue 19's target: invalidation seen on all three processes, p99 <= 20 ms under the
# benchmark load). redis-benchmark writes random keys to node 1 (-t set -c 50 -P 16 -r
# 100000 -d 100, LOAD=0 for none) while a probe, ROUNDS times: SETs a key of its own through
# node 1 (a plain client: the write goes to the key's primary), reads it on nodes 2 and 3
# (each keeps a copy in L1), DELs it through node 1 (acknowledged once its owners hold the
# removal), then polls GET on nodes 2 and 3 until both answer nil. The time from the DEL's
# reply until the last node stops serving the old value is one sample; prints p50, p99
# and the worst, idle and under the load, beside what one GET takes then (under load a
# sample can be no shorter than the GETs that observe it) and how many rounds' first reads
# still found the old value. Then what the nodes measured themselves over the same period
# (`invalidation_delays` in each node's /cluster status, from the write's stamp to the
# invalidation's application on each other member), for every key the period changed,
# the benchmark's included.
# Starts and stops everything it runs. A few minutes after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
need_redis_py
ROUNDS=${ROUNDS:-300}
LOAD=${LOAD:-1}
BENCH_PID=""
cleanup() {
  [ -n "$BENCH_PID" ] && kill -TERM "$BENCH_PID" 2>/dev/null || true
  cluster/local.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

cluster/local.sh up >/dev/null
for p in 6381 6382 6383; do wait_port "$p"; done

probe() { # label -> prints one line of figures
  python3 - "$1" "$ROUNDS" <<'EOF'
import json, sys, time, urllib.request, redis
label, rounds = sys.argv[1], int(sys.argv[2])
BOUNDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]  # strata::cluster::DELAY_BOUNDS_MS

def delays():
    # Each node's count of key invalidations from other members by delay bucket (its
    # /cluster status): from the write's stamp to their application there.
    out = []
    for port in (9381, 9382, 9383):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/cluster", timeout=5) as r:
            out.append(json.load(r)["invalidation_delays"])
    return [sum(col) for col in zip(*out)]

before = delays()
n1, n2, n3 = (redis.Redis(port=p) for p in (6381, 6382, 6383))
samples, stale_reads, first_stale, reads = [], 0, 0, []
for i in range(rounds):
    k = f"inv-probe:{label}:{i}"
    n1.set(k, b"old")
    # Both other processes hold a copy (read through their owners, kept in L1).
    deadline = time.monotonic() + 5
    while not (n2.get(k) == b"old" and n3.get(k) == b"old"):
        if time.monotonic() > deadline:
            sys.exit(f"round {i}: the value never reached nodes 2 and 3")
        time.sleep(0.001)
    n1.delete(k)
    t0 = time.monotonic()
    pending = {2: n2, 3: n3}
    first = True
    while pending:
        for name, c in list(pending.items()):
            r0 = time.monotonic()
            got = c.get(k)
            reads.append((time.monotonic() - r0) * 1000)
            if got is None:
                del pending[name]
            else:
                stale_reads += 1
                first_stale += first
        first = False
        if time.monotonic() - t0 > 2:
            sys.exit(f"round {i}: still served 2 s after its DEL")
    samples.append((time.monotonic() - t0) * 1000)
samples.sort()
q = lambda f: samples[min(len(samples) - 1, int(f * len(samples)))]
period = [a - b for a, b in zip(delays(), before)]
total = sum(period)
def bucket(f):
    # The upper bound of the bucket holding the f-quantile ("> 1000" past the last).
    seen = 0
    for i, c in enumerate(period):
        seen += c
        if total and seen >= f * total:
            return f"<= {BOUNDS[i]}" if i < len(BOUNDS) else "> 1000"
    return "-"
within20 = sum(period[:BOUNDS.index(20) + 1])
reads.sort()
r = lambda f: reads[min(len(reads) - 1, int(f * len(reads)))]
print(f"{label:<11} seen after p50 {q(0.5):7.2f} ms  p99 {q(0.99):7.2f} ms  worst "
      f"{samples[-1]:7.2f} ms | one GET p50 {r(0.5):6.2f} ms  p99 {r(0.99):6.2f} ms | "
      f"rounds whose first reads found the old value {first_stale}/{len(samples)}, "
      f"stale reads {stale_reads}")
print(f"{'':11} in the nodes: {total} key invalidations applied, p50 {bucket(0.5)} ms, "
      f"p99 {bucket(0.99)} ms, within 20 ms {100 * within20 / max(total, 1):.2f} %")
EOF
}

echo "invalidation seen on nodes 2 and 3 after a DEL through node 1 (${ROUNDS} rounds):"
probe idle
if [ "$LOAD" = 1 ]; then
  redis-benchmark -p 6381 -t set -n 100000000 -c 50 -P 16 -r 100000 -d 100 -q >/dev/null 2>&1 &
  BENCH_PID=$!
  sleep 2
  probe "under load"
  kill -TERM "$BENCH_PID" 2>/dev/null || true
  BENCH_PID=""
fi
