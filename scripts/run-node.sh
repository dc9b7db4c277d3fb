#!/usr/bin/env bash
# Runs an embedded Strata node: the example service that caches a slow lookup with
# get_or_load, invalidates, and prints per-layer stats. Needs only the Rust toolchain.
# Pass RUST_LOG=debug to watch the layer actors sweep and snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
exec cargo run --release --locked -p strata --example embedded
