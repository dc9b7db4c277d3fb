#!/usr/bin/env bash
# The Redis bridge's L2 hit beside a bare redis-rs GET on the same redis-server, in one run;
# prints criterion's means as ratios to the bare GET, then the bench's own p50/p99 table.
# Starts (and stops) its own redis-server on a free loopback port. About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install redis-server" >&2; exit 1; }
cargo bench --locked -p strata-redis --bench bridge "$@"
python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion")
for size in (100, 4096):
    g = root / f"redis_l2_hit_{size}b"
    def mean(b):
        p = g / b / "new" / "estimates.json"
        return json.loads(p.read_text())["mean"]["point_estimate"] if p.exists() else None
    a = mean("bare_redis_rs_get")
    if a is None:
        print(f"redis_l2_hit_{size}b: no results"); continue
    print(f"redis_l2_hit_{size}b  (anchor bare_redis_rs_get: {a/1000:.2f} us)")
    for b in ("strata_bridge_get", "strata_cache_get_l2"):
        v = mean(b)
        if v is not None:
            print(f"  {b:22} {v/1000:8.2f} us   {v/a:5.2f}x the anchor")
PY
