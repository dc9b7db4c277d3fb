#!/usr/bin/env bash
# Two builds of strata side by side on the same cluster: `scripts/bench-cluster-ab.sh OLD NEW`
# (paths to two `strata` binaries, e.g. a copy of target/release/strata made before a change
# and the one after). Runs cluster/local.sh (three nodes, replication factor 2, fresh data) on
# each in turn, ROUNDS times alternating, and prints redis-benchmark's INCR and SET
# throughput against node 1 (-n N -c 50 -r 100000 -d 100, at -P 1 and -P 16) with the ratio
# of the best rounds. TESTS="incr set get-miss get-miss-random" picks the commands (default
# incr and set): get-miss is a GET of one key no node holds, get-miss-random a GET of random
# keys of an empty cluster (-r 1000000). Puts NEW back as target/release/strata; stops every
# node it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_redis_tools
[ $# -eq 2 ] || { echo "usage: $0 OLD_STRATA NEW_STRATA" >&2; exit 2; }
OLD=$(realpath "$1"); NEW=$(realpath "$2")
N=${N:-100000}
ROUNDS=${ROUNDS:-2}
trap 'cluster/local.sh down >/dev/null 2>&1 || true; cp "$NEW" target/release/strata' EXIT
TESTS=${TESTS:-incr set}
declare -A best
one() { # binary label
  fresh_cluster "$1"
  for t in $TESTS; do
    for P in 1 16; do
      case "$t" in
        get-miss) args=(get absent:key) ;;
        get-miss-random) args=(-r 1000000 get 'absent:__rand_int__') ;;
        *) args=(-r 100000 -d 100 -t "$t") ;;
      esac
      v=$(redis-benchmark -p 6381 -n "$N" -c 50 -P "$P" -q "${args[@]}" 2>/dev/null |
        tr '\r' '\n' | awk -F': ' '/requests per second/{split($2,a," "); v=a[1]} END{print v+0}')
      k="$2 $t $P"
      best[$k]=$(python3 -c "print(max(${best[$k]:-0}, $v))")
    done
  done
  cluster/local.sh down >/dev/null
}
for _ in $(seq 1 "$ROUNDS"); do one "$OLD" old; one "$NEW" new; done
printf '%-15s %-4s %12s %12s %7s\n' command -P old new ratio
for t in $TESTS; do
  for P in 1 16; do
    o=${best[old $t $P]}; n=${best[new $t $P]}
    printf '%-15s %-4s %12s %12s %7s\n' "$t" "$P" "$o" "$n" "$(python3 -c "print(f'{$n/max($o,1):.2f}x')")"
  done
done
