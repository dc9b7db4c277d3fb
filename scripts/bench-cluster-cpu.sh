#!/usr/bin/env bash
# CPU per request across the three nodes of cluster/local.sh, for one or more builds:
# `scripts/bench-cluster-cpu.sh BIN [BIN...]` (paths to `strata` binaries, e.g. a copy of
# target/release/strata made before a change and the one after). For each build in turn,
# ROUNDS times alternating, it starts a fresh cluster/local.sh (three nodes, replication
# factor 2), runs redis-benchmark against node 1 (`-n N -c 50 -r 100000 -d 100`, each of
# TESTS at -P 1 and -P 16; a test is a redis-benchmark `-t` name, or `del-missing`: DEL of
# random keys never written), and reads the nodes' user + system CPU time from /proc before
# and after each run. Prints every round's ops/s and CPU µs per request, then each build's
# median CPU per request: on this shared 2-core VM throughput moves ±10–20 % between
# identical runs, CPU per request less. Extra environment (e.g. STRATA__L3__ENABLED=false)
# reaches the nodes. Stops every node it started; puts the last BIN back as
# target/release/strata.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
[ $# -ge 1 ] || { echo "usage: $0 STRATA_BIN [STRATA_BIN...]" >&2; exit 2; }
N=${N:-100000}
ROUNDS=${ROUNDS:-3}
TESTS=${TESTS:-set incr}
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
last=${bins[${#bins[@]}-1]}
trap 'cluster/local.sh down >/dev/null 2>&1 || true; cp "$last" target/release/strata' EXIT
ticks=$(getconf CLK_TCK)
cpu_ticks() { # the three nodes' utime + stime, in clock ticks
  local t=0 i pid
  for i in 1 2 3; do
    pid=$(cat "cluster/run/node$i.pid")
    t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$t"
}
results=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!bins[@]}"; do
    fresh_cluster "${bins[$i]}"
    for t in $TESTS; do
      for P in 1 16; do
        before=$(cpu_ticks)
        case "$t" in
          # DEL of keys no one wrote (a cache-aside client deleting what it never cached).
          del-missing) what=(DEL "missing:__rand_int__") ;;
          *) what=(-t "$t") ;;
        esac
        rps=$(redis-benchmark -p 6381 -n "$N" -c 50 -P "$P" -q -r 100000 -d 100 "${what[@]}" 2>/dev/null |
          tr '\r' '\n' | awk -F': ' '/requests per second/{split($2,a," "); v=a[1]} END{print v+0}')
        after=$(cpu_ticks)
        us=$(( (after - before) * 1000000 / ticks / N ))
        echo "$round $i $t $P $rps $us" | tee -a "$results" |
          awk -v b="${bins[$i]}" '{printf "round %s  %-40s %-5s -P %-3s %10s ops/s %6s us/request\n", $1, b, $3, $4, $5, $6}'
      done
    done
    cluster/local.sh down >/dev/null
  done
done
echo "median CPU per request (µs, three nodes), and median ops/s:"
python3 - "$results" "${bins[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
bins = sys.argv[2:]
keys = sorted({(r[2], int(r[3])) for r in rows})
for t, p in keys:
    cells = []
    for i, b in enumerate(bins):
        mine = [r for r in rows if int(r[1]) == i and r[2] == t and int(r[3]) == p]
        cpu = statistics.median(int(r[5]) for r in mine)
        ops = statistics.median(float(r[4]) for r in mine)
        cells.append(f"{cpu:6.0f} us {ops:10.0f}/s")
    ratio = ""
    if len(bins) > 1:
        first = statistics.median(int(r[5]) for r in rows if int(r[1]) == 0 and r[2] == t and int(r[3]) == p)
        last = statistics.median(int(r[5]) for r in rows if int(r[1]) == len(bins) - 1 and r[2] == t and int(r[3]) == p)
        ratio = f"   cpu last/first {last / max(first, 1):.2f}"
    print(f"{t:6s} -P {p:<3d} " + " | ".join(cells) + ratio)
EOF
rm -f "$results"
