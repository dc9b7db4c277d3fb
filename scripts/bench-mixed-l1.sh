#!/usr/bin/env bash
# How often a node's L1 misses while another node writes the keys it reads:
# `scripts/bench-mixed-l1.sh BIN [BIN...]` (paths to `strata` binaries). For each build in
# turn, ROUNDS times alternating, on a fresh cluster/local.sh (three nodes, replication
# factor 2): node 2 writes KEYS keys (`SET`, 100 B), node 1 reads them once (cold) and again
# (warm), then node 1 reads while node 2 overwrites the same keys. Prints, per phase, node 1's
# GET/s and its L1 hits and misses (`INFO all`: l1_hits, l1_misses), and each build's median
# miss share in the mixed phase. Stops every node it started; puts the last BIN back as
# target/release/strata.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
[ $# -ge 1 ] || { echo "usage: $0 STRATA_BIN [STRATA_BIN...]" >&2; exit 2; }
KEYS=${KEYS:-20000}
READS=${READS:-200000}
WRITES=${WRITES:-100000}
ROUNDS=${ROUNDS:-2}
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
last=${bins[${#bins[@]}-1]}
writer=""
trap '[ -n "$writer" ] && kill "$writer" 2>/dev/null; cluster/local.sh down >/dev/null 2>&1 || true; cp "$last" target/release/strata' EXIT
l1() { # node 1's "hits misses"
  redis-cli -p 6381 info all | tr -d '\r' |
    awk -F: '/^l1_hits:/{h=$2} /^l1_misses:/{m=$2} END{print h+0, m+0}'
}
rps() { tr '\r' '\n' | awk -F': ' '/requests per second/{split($2,a," "); v=a[1]} END{print v+0}'; }
results=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!bins[@]}"; do
    fresh_cluster "${bins[$i]}"
    redis-benchmark -p 6382 -t set -r "$KEYS" -n $((KEYS * 5)) -c 20 -d 100 -q >/dev/null 2>&1
    for phase in cold warm mixed; do
      read -r h0 m0 < <(l1)
      if [ "$phase" = mixed ]; then
        redis-benchmark -p 6382 -t set -r "$KEYS" -n "$WRITES" -c 20 -d 100 -q >/dev/null 2>&1 &
        writer=$!
      fi
      n=$READS
      [ "$phase" = cold ] && n=$KEYS
      g=$(redis-benchmark -p 6381 -t get -r "$KEYS" -n "$n" -c 20 -q 2>/dev/null | rps)
      read -r h1 m1 < <(l1)
      if [ -n "$writer" ]; then wait "$writer" || true; writer=""; fi
      echo "$round $i $phase $g $((h1 - h0)) $((m1 - m0))" | tee -a "$results" |
        awk -v b="${bins[$i]}" '{printf "round %s  %-32s %-6s %10s GET/s  L1 hits %8s  misses %8s (%.1f %%)\n",
          $1, b, $3, $4, $5, $6, 100 * $6 / ($5 + $6 + 0.000001)}'
    done
    cluster/local.sh down >/dev/null
  done
done
echo "median share of node 1's reads that missed L1 while node 2 wrote, and GET/s:"
python3 - "$results" "${bins[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for i, b in enumerate(sys.argv[2:]):
    mine = [r for r in rows if int(r[1]) == i and r[2] == "mixed"]
    miss = statistics.median(int(r[5]) / max(int(r[4]) + int(r[5]), 1) for r in mine)
    gets = statistics.median(float(r[3]) for r in mine)
    print(f"{b:40s} misses {100 * miss:5.1f} %   {gets:10.0f} GET/s")
EOF
rm -f "$results"
