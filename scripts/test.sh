#!/usr/bin/env bash
# The full test suite, exactly as CI runs it (.ci/run calls this). Needs only the Rust
# toolchain: it installs the system packages the build needs when they are missing
# (libclang-dev, for RocksDB's bindings; redis-server and redis-tools, whose redis-cli and
# redis-benchmark the server tests drive; curl for the HTTPS admin test; iproute2's ip
# for the partition tests' network namespaces; Node.js, npm and
# the Node.js clients ioredis and node-redis (tests/js); promtool from
# Debian's prometheus package for the alert rules; chromium and chromedriver for the web
# console's browser test; redis-py from PyPI) and checks formatting, lints, docs, the example, the tests and the benches (criterion's test mode runs each benchmark once). Every cargo
# step uses the same feature set (--all-features) and the same profile (`test`: cargo builds
# every unit of `cargo test`, dependencies and build scripts included, under the profile
# name `test`, and the name is part of each unit's hash), so RocksDB is compiled once and
# shared by every step.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Debian packages the build needs, installed when missing (CI runs as root).
need_debs=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_debs+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_debs+=(g++)
command -v redis-server >/dev/null 2>&1 || need_debs+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need_debs+=(redis-tools)
command -v curl >/dev/null 2>&1 || need_debs+=(curl)
command -v python3 >/dev/null 2>&1 || need_debs+=(python3 python3-pip)
# Node.js and npm, for the Node.js clients' tests (tests/js_clients.rs).
command -v node >/dev/null 2>&1 || need_debs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_debs+=(npm)
# ip (iproute2), for the partition tests' network namespaces (tests/partition.rs).
command -v ip >/dev/null 2>&1 || need_debs+=(iproute2)
# promtool, which checks deploy/prometheus's rules (tests/deploy.rs), comes with Debian's
# prometheus package (installed without its recommended web assets).
# chromium and chromedriver drive the web console in a headless browser (tests/console.rs).
need_nodeps=""
command -v promtool >/dev/null 2>&1 || need_nodeps=prometheus
command -v chromedriver >/dev/null 2>&1 || need_nodeps="$need_nodeps chromium chromium-driver"
if [ ${#need_debs[@]} -gt 0 ] || [ -n "$need_nodeps" ]; then
  step "installing ${need_debs[*]} $need_nodeps"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  if [ ${#need_debs[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_debs[@]}" >/dev/null
  fi
  if [ -n "$need_nodeps" ]; then
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends $need_nodeps >/dev/null
  fi
fi

# redis-py, for the tests that check a real Python client (ACL users, TLS).
if ! python3 -c 'import redis' >/dev/null 2>&1; then
  step "installing redis-py"
  python3 -m pip install -q redis 2>/dev/null \
    || python3 -m pip install -q --break-system-packages redis
fi

# ioredis and node-redis, at the exact versions tests/js/package.json names (no lock file:
# it would record where the packages were downloaded from).
if [ ! -d tests/js/node_modules/ioredis ] || [ ! -d tests/js/node_modules/redis ]; then
  step "installing the Node.js clients (tests/js)"
  (cd tests/js && npm install --no-package-lock --no-audit --no-fund --silent)
fi

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || {
    echo "cargo $tool is missing from this toolchain (rustup component add rustfmt clippy)" >&2
    exit 1
  }
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --profile test --locked -- -D warnings
# The embeddable crates without optional features (no RocksDB involved).
cargo clippy -p strata-core -p strata -p strata-resp --all-targets --profile test --locked -- -D warnings

step "fuzz targets compile (scripts/fuzz.sh runs them)"
cargo check --quiet --manifest-path fuzz/Cargo.toml

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --profile test --locked --quiet

step "embedded example"
cargo run --quiet --locked --all-features --profile test -p strata --example embedded

step "tests: unit, integration, benches in test mode, doc tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: every test binary runs, so one failure does not hide the others'.
cargo test --workspace --all-targets --all-features --locked --no-fail-fast 2>&1 | tee -a "$log"
cargo test --workspace --doc --all-features --locked --no-fail-fast 2>&1 | tee -a "$log"

# One closing line with the totals of every test binary above.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\nall test binaries: %d passed, %d failed\n", p, f }' "$log"
