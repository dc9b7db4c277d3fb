"""Which owners a `quick` run's lost SETs had, membership by membership: python3 classify.py RUN...

RUN is a run's folder name under $MR_BASE/runs (e.g. quick-s2). For each acknowledged SET the
final check found missing, the key's owners in each membership the `quick` scenario passes
through (rings.json, from ringmap.py), counted by that path. "double" counts the keys whose
owners, while nodes 1 and 2 were both members (123, 1234, 12345), were only those two at one of
them: in the `kill -9` variant both are killed 4 s apart, inside failure detection, so a key
that had not reached a third member by then is lost as a Redis Cluster master and replica
killed together would lose it (how many had reached node 4 by its join's hand-off, the run
does not tell).
"""
import collections
import json
import sys

from ctl import BASE
from owners import R, owners

# The memberships of `quick`, in order: +4, +5, -1, -2, +1 (old L3), -4, +2 (fresh).
PATH = ["123", "1234", "12345", "2345", "345", "1345", "135", "1235"]


def main(runs):
    missing_rings = [r for r in PATH if r not in R]
    if missing_rings:
        sys.exit(f"rings.json lacks {missing_rings}: run ringmap.py again")
    for run in runs:
        final = json.load(open(f"{BASE}/runs/{run}/final.json"))
        miss = final["kv"]["missing"]
        paths = collections.Counter()
        example = {}
        double = 0
        for m in miss:
            path = tuple(tuple(sorted(owners(r, m["key"]))) for r in PATH)
            if any(set(path[i]) <= {1, 2} for i in range(3)):
                double += 1
            paths[path] += 1
            example.setdefault(path, m)
        print(f"{run}: {len(miss)} acknowledged SETs missing; {double} held by nodes 1 and 2 only at some point before both were stopped")
        print("  owners in " + " ".join(PATH))
        for path, n in paths.most_common(8):
            m = example[path]
            print(f"  {n:5d}  {' '.join(''.join(map(str, o)) for o in path)}   e.g. {m['key']} acked {m['set_acked']:.3f} s via {m['set_port']}")


if __name__ == "__main__":
    main(sys.argv[1:])
