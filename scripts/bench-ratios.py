#!/usr/bin/env python3
"""Prints Strata's benchmark figures next to their anchors, from criterion's estimates.

Reads target/criterion/<group>/<bench>/new/estimates.json (written by `cargo bench`) and
prints, per group, each benchmark's mean and its ratio to the anchor of that group.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"

# group -> (anchor, [benchmarks compared with it])
GROUPS = {
    "l1_hit_1thread": ("quick_cache_get", ["strata_cache_get", "strata_l1_tier_get_value", "moka_get"]),
    "l1_hit_2threads": ("quick_cache_get", ["strata_cache_get", "moka_get"]),
    "get_or_load_64_callers": ("moka_get_with", ["strata_get_or_load"]),
}


def mean_ns(group, bench):
    path = ROOT / group / bench / "new" / "estimates.json"
    if not path.exists():
        return None
    est = json.loads(path.read_text())
    return est["mean"]["point_estimate"]


def fmt(ns):
    return f"{ns / 1000:.2f} us" if ns >= 10_000 else f"{ns:.1f} ns"


missing = False
for group, (anchor, benches) in GROUPS.items():
    a = mean_ns(group, anchor)
    if a is None:
        print(f"{group}: no results (run `cargo bench -p strata-core --bench l1_get` first)")
        missing = True
        continue
    print(f"{group}  (anchor {anchor}: {fmt(a)})")
    for b in benches:
        v = mean_ns(group, b)
        if v is None:
            print(f"  {b:28} no result")
            continue
        print(f"  {b:28} {fmt(v):>10}   {v / a:5.2f}x the anchor")
sys.exit(1 if missing else 0)
