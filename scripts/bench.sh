#!/usr/bin/env bash
# Runs the L1 / get_or_load benchmark (Strata beside quick_cache and moka in one run) and
# prints each figure's ratio to its anchor. Takes about three minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -p strata-core --bench l1_get "$@"
python3 scripts/bench-ratios.py
