#!/usr/bin/env python3
"""Prints the side-by-side table of scripts/bench-resp.sh from its CSV rows:
server,pipeline,size,"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
"p95_latency_ms","p99_latency_ms","max_latency_ms"."""
import csv
import sys

rows = {}
for rec in csv.reader(open(sys.argv[1])):
    if len(rec) < 10 or rec[3] == "test":
        continue
    server, pipeline, size, test = rec[0], int(rec[1]), int(rec[2]), rec[3]
    rps, p50, p99 = float(rec[4]), float(rec[7]), float(rec[9])
    rows[(pipeline, size, test, server)] = (rps, p50, p99)

print(f"{'test':<16}{'-P':>4}{'-d':>6} | {'strata ops/s':>13}{'p50 ms':>8}{'p99 ms':>8} | "
      f"{'redis ops/s':>12}{'p50 ms':>8}{'p99 ms':>8} | {'ratio':>6}")
for (pipeline, size, test, server) in sorted(rows):
    if server != "strata" or (pipeline, size, test, "redis") not in rows:
        continue
    s = rows[(pipeline, size, test, "strata")]
    r = rows[(pipeline, size, test, "redis")]
    print(f"{test:<16}{pipeline:>4}{size:>6} | {s[0]:>13,.0f}{s[1]:>8.3f}{s[2]:>8.3f} | "
          f"{r[0]:>12,.0f}{r[1]:>8.3f}{r[2]:>8.3f} | {s[0] / r[0]:>5.2f}x")
