#!/usr/bin/env bash
# Runs one Strata node: `strata serve` (built by cargo in release mode) with L1 + L3 in
# ./strata-data, the Redis protocol on 127.0.0.1:6380 and the admin port on 127.0.0.1:9380.
# Arguments go to `strata serve` (e.g. --config strata.toml, --resp-listen 127.0.0.1:7000).
# Needs only the Rust toolchain: installs libclang-dev (RocksDB's bindings) when missing.
# The first build compiles RocksDB (~8 minutes on two cores). Stop it with Ctrl-C (SIGINT)
# or SIGTERM: it drains connections, flushes L3 and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
if ! dpkg -s libclang-dev >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libclang-dev g++ >/dev/null
fi
exec cargo run --release --locked -p strata-server -- serve "$@"
