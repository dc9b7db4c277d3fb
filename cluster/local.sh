#!/usr/bin/env bash
# A three-node Strata cluster on this machine, one command each:
#
#   cluster/local.sh up       build (release) and start node1..node3, wait until they agree
#   cluster/local.sh status   each node's view: members, state, ring version, RPC latency
#   cluster/local.sh down     stop them (SIGTERM: drain, leave the cluster, flush L3)
#
# Clients: redis-cli -p 6381 | 6382 | 6383 (any node serves any key); cluster-aware clients
# on 7381 | 7382 | 7383 (redis-cli -c, redis-benchmark --cluster, redis-py's RedisCluster:
# each key goes to its primary). Admin HTTP on
# 127.0.0.1:9381..9383 (/health, /metrics, /cluster). Configs: cluster/node{1,2,3}.toml;
# logs, pids, data and the generated cluster secret live in cluster/run/.
# Needs only the Rust toolchain: installs libclang-dev (RocksDB's bindings) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=cluster/run
BIN=target/release/strata
NODES=(1 2 3)

admin_port() { echo $((9380 + $1)); }
resp_port() { echo $((6380 + $1)); }

build() {
  command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
  if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
    local sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libclang-dev g++ >/dev/null
  fi
  # STRATA_NO_BUILD=1: run target/release/strata as it is (scripts/bench-cluster-ab.sh puts
  # the build it compares there).
  [ "${STRATA_NO_BUILD:-}" = 1 ] && [ -x "$BIN" ] && return 0
  cargo build --release --locked -p strata-server
}

running() { [ -f "$RUN/node$1.pid" ] && kill -0 "$(cat "$RUN/node$1.pid")" 2>/dev/null; }

# GET an admin path with bash's /dev/tcp (no curl needed); prints the body.
admin_get() {
  local port=$1 path=$2
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

up() {
  build
  mkdir -p "$RUN"
  if [ -z "${STRATA__CLUSTER__SECRET:-}" ]; then
    [ -s "$RUN/secret" ] || head -c 24 /dev/urandom | base64 > "$RUN/secret"
    STRATA__CLUSTER__SECRET="$(cat "$RUN/secret")"
  fi
  export STRATA__CLUSTER__SECRET
  for i in "${NODES[@]}"; do
    if running "$i"; then echo "node$i already running (pid $(cat "$RUN/node$i.pid"))"; continue; fi
    nohup "$BIN" serve --config "cluster/node$i.toml" >"$RUN/node$i.log" 2>&1 &
    echo $! > "$RUN/node$i.pid"
    echo "node$i: pid $!, redis-cli -p $(resp_port "$i"), admin 127.0.0.1:$(admin_port "$i")"
  done
  # Ready when every node sees three live members.
  for _ in $(seq 1 150); do
    local ok=0
    for i in "${NODES[@]}"; do
      running "$i" || { echo "node$i exited; see $RUN/node$i.log" >&2; tail -5 "$RUN/node$i.log" >&2; exit 1; }
      local alive
      alive=$(admin_get "$(admin_port "$i")" /cluster 2>/dev/null | grep -o '"state":"\(self\|alive\)"' | wc -l || true)
      [ "$alive" = 3 ] && ok=$((ok + 1))
    done
    if [ "$ok" = 3 ]; then echo "cluster up: 3 members"; return 0; fi
    sleep 0.2
  done
  echo "the nodes did not converge within 30 s; see $RUN/node*.log" >&2
  exit 1
}

down() {
  for i in "${NODES[@]}"; do
    if running "$i"; then
      local pid; pid=$(cat "$RUN/node$i.pid")
      kill -TERM "$pid"
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
      echo "node$i stopped"
    fi
    rm -f "$RUN/node$i.pid"
  done
}

status() {
  for i in "${NODES[@]}"; do
    if ! running "$i"; then echo "node$i: not running"; continue; fi
    echo "node$i (pid $(cat "$RUN/node$i.pid")):"
    if [ -x "$BIN" ]; then
      "$BIN" cluster --admin "127.0.0.1:$(admin_port "$i")" | grep -E '"(name|state|ring_version|rtt_us|in_sync)"' | sed 's/^/  /'
    else
      admin_get "$(admin_port "$i")" /cluster; echo
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
