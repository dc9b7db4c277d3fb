#!/usr/bin/env bash
# run.sh SCENARIO.py : a fresh network (three namespaces on a bridge) and three nodes
# (STRATA_BIN, default target/release/strata), the scenario, then cleanup even on failure.
# Logs and output are kept in $PARTITION_RUN/logs/<scenario>-<time>/ (default
# /tmp/strata-partition-review). Needs root (ip netns, tc) and redis-py.
set -u
D=$(cd "$(dirname "$0")" && pwd); W=${PARTITION_RUN:-/tmp/strata-partition-review}
export PARTITION_RUN=$W
scenario=$(realpath "$1"); shift
cd "$D"
cleanup() { "$D/nodes.sh" stop; "$D/part.sh" fini; "$D/net.sh" down; }
trap cleanup EXIT INT TERM
cleanup 2>/dev/null
rm -rf "$W/run"; mkdir -p "$W/run"
"$D/net.sh" up && "$D/part.sh" init && "$D/nodes.sh" start || exit 1
timeout 300 python3 -u "$scenario" "$@" 2>&1 | tee "$W/run/out.txt"; rc=${PIPESTATUS[0]}
name=$(basename "$scenario" .py); out=$W/logs/$name-$(date +%H%M%S); mkdir -p "$out"
"$D/nodes.sh" status > "$out/status-end.txt" 2>&1
grep -H -c "declared this node down" "$W"/run/node*.log > "$out/declared-down.txt"
cp "$W"/run/node*.log "$W/run/out.txt" "$out/"; echo "logs in $out"; cat "$out/declared-down.txt"
exit "$rc"
