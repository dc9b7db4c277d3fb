#!/usr/bin/env bash
# One `strata serve` build against another, alternating on a fresh node each round:
# `scripts/bench-resp-ab.sh OLD NEW [MORE...]` (paths to `strata` binaries, e.g. a copy of
# target/release/strata made before a change and the one after). Each round, for each build:
# a fresh node (default profile, L3 in a temporary directory), a fill of the keyspace with
# SET (`-n KEYSPACE -r KEYSPACE -P 16`: about 63 % of the keys), then GET at -P 1 and -P 16
# (hits from L1, misses asked of L3), SET at -P 16 over ten times the keyspace (`set-new`:
# mostly keys L3 stores for the first time), SET at -P 16 over the keyspace (`set-over`:
# mostly overwrites of keys L3 holds) and INCR at -P 16. Prints every run's ops/s, p99 and the node's
# user + system CPU per request, then each build's medians. A run ends when L3 has stored its
# writes (a DBSIZE, which waits for writes held behind): its ops/s and CPU include that.
# SIZE sets the values' bytes
# (default 100); L1_BYTES the node's L1 capacity (default: the profile's), e.g. a small L1
# so that the GETs are L3 hits. For a change's effect on one node; against
# redis-server, scripts/bench-resp.sh. Stops every node it started.
#
#   ROUNDS=3 N=100000 KEYSPACE=100000 scripts/bench-resp-ab.sh /tmp/strata-old target/release/strata
#   SIZE=1024 L1_BYTES=8388608 scripts/bench-resp-ab.sh OLD NEW    # GETs mostly L3 hits
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN [MORE_BINS...]" >&2; exit 2; }

N=${N:-100000}              # requests per run at -P 1 (x5 at -P 16)
KEYSPACE=${KEYSPACE:-100000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-16392}
ADMIN_PORT=${ADMIN_PORT:-19392}
SIZE=${SIZE:-100}
L1_BYTES=${L1_BYTES:-}

. scripts/lib.sh
need_redis_tools

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "ops/s p99_ms" of one redis-benchmark run (its --csv line: "test","rps","avg","min","p50","p95","p99",...).
bench() { redis-benchmark -p "$PORT" -c 50 -d "$SIZE" "$@" --csv 2>/dev/null | tail -1 | cut -d, -f2,7 | tr -d '"' | tr , ' '; }

results="$work/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    rm -rf "$work/data"
    env RUST_LOG=warn ${L1_BYTES:+STRATA__L1__CAPACITY_BYTES=$L1_BYTES} "$bin" serve --data-dir "$work/data" --resp-listen "127.0.0.1:$PORT" \
      --admin-listen "127.0.0.1:$ADMIN_PORT" >"$work/node.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$PORT" ping >/dev/null || { echo "$bin did not start" >&2; cat "$work/node.log" >&2; exit 1; }
    bench -t set -n "$KEYSPACE" -r "$KEYSPACE" -P 16 >/dev/null
    for run in "get get 1 $KEYSPACE" "get get 16 $KEYSPACE" "set-new set 16 $((KEYSPACE * 10))" \
      "set-over set 16 $KEYSPACE" "incr incr 16 $KEYSPACE"; do
      read -r label test p keys <<<"$run"
      n=$N; [ "$p" -gt 1 ] && n=$((N * 5))
      before=$(cpu "$pid")
      read -r ops p99 <<<"$(bench -t "$test" -n "$n" -r "$keys" -P "$p")"
      # A run's writes L3 still holds behind (`l3.write_behind`) are its own work: DBSIZE
      # waits for them, inside the run's CPU and time (a no-op wait for writes stored
      # through), so the next run does not pay for them.
      t0=$(date +%s%N); redis-cli -p "$PORT" dbsize >/dev/null; t1=$(date +%s%N)
      ops=$(python3 -c "print(round($n / ($n / $ops + ($t1 - $t0) / 1e9), 2))")
      after=$(cpu "$pid")
      # CPU in clock ticks (1/100 s) -> µs per request.
      us=$(( (after - before) * 10000 * 1000 / n ))
      printf 'round %s  %-40s %-8s -P %-3s %12s ops/s  p99 %7s ms %6s.%s us/request\n' \
        "$round" "$bin" "$label" "$p" "$ops" "$p99" "$((us / 1000))" "$(( (us % 1000) / 100 ))"
      echo "$bin $label $p $ops $us $p99" >>"$results"
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  done
done

echo "medians (ops/s, CPU µs per request, p99 ms):"
python3 - "$results" "$@" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
bins = sys.argv[2:]
for test, p in [("get", "1"), ("get", "16"), ("set-new", "16"), ("set-over", "16"), ("incr", "16")]:
    cells = []
    for b in bins:
        mine = [r for r in rows if r[0] == b and r[1] == test and r[2] == p]
        ops = statistics.median(float(r[3]) for r in mine)
        us = statistics.median(int(r[4]) for r in mine) / 1000
        p99 = statistics.median(float(r[5]) for r in mine)
        cells.append((ops, us, p99))
    line = f"{test:8} -P {p:3}" + "".join(
        f" | {ops:10.0f}/s {us:6.1f} us {p99:6.2f} ms" for ops, us, p99 in cells)
    line += f"   ops last/first {cells[-1][0] / cells[0][0]:.2f}"
    print(line)
EOF
