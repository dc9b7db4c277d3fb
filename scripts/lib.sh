# Helpers the bench scripts share (sourced, not run), and what installs the tools they
# compare against when missing (as root, or through sudo), so each runs on a machine that
# has only the Rust toolchain.

# A free loopback TCP port (bound, then released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 30 s for something to listen on loopback port $1, or exits.
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# redis-server, redis-cli and redis-benchmark (Debian's redis-server and redis-tools).
need_redis_tools() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null \
    || ! command -v redis-benchmark >/dev/null; then
    local sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
}

# redis-py (from PyPI).
need_redis_py() {
  python3 -c "import redis" 2>/dev/null || python3 -m pip install -q redis 2>/dev/null \
    || python3 -m pip install -q --break-system-packages redis
}

# A fresh cluster/local.sh (three nodes, empty data directories) running the `strata` binary
# $1, installed as target/release/strata; returns once every node's RESP port answers, and
# then SETTLE_SECS later (default 0). A cluster that just formed is inside its hand-off
# window (`cluster.handoff_window_ms`, 30 s after the last ring change), where a primary
# without a copy asks the previous owners too before a plain SET or DEL; SETTLE_SECS=32
# measures the steady state a long-running cluster is in.
fresh_cluster() {
  cluster/local.sh down >/dev/null 2>&1 || true
  rm -rf cluster/run/data1 cluster/run/data2 cluster/run/data3
  mkdir -p target/release
  cp "$1" target/release/strata.tmp && mv target/release/strata.tmp target/release/strata
  STRATA_NO_BUILD=1 cluster/local.sh up >/dev/null
  local p; for p in 6381 6382 6383; do wait_port "$p"; done
  sleep "${SETTLE_SECS:-0}"
}
