"""Start throwaway clusters to record CLUSTER SLOTS for memberships: python3 ringmap.py -> rings.json"""
import json, os, sys, time, signal
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctl import *
from load import Conn
c = Cluster(f"{BASE}/runs/ringmap", seeds=(1, 2, 3, 4, 5))
os.system(f"rm -rf {BASE}/runs/ringmap/data*")
out = {}
def snap(name, members):
    c.wait_converged(set(members))
    time.sleep(0.5)
    cc = Conn(resp_port(members[0])); r = cc.cmd("CLUSTER", "SLOTS"); cc.close()
    out[name] = [[e[0], e[1], [n[1] - 7730 for n in e[2:]]] for e in r]
try:
    for i in (1, 2, 3): c.start(i)
    snap("123", [1, 2, 3])
    c.start(4); snap("1234", [1, 2, 3, 4])
    c.start(5); snap("12345", [1, 2, 3, 4, 5])
    c.stop(2); snap("1345", [1, 3, 4, 5])
    c.stop(5); snap("134", [1, 3, 4])
    c.stop(1); c.start(2); snap("234", [2, 3, 4])
    c.start(5); snap("2345", [2, 3, 4, 5])
    c.stop(2); snap("345", [3, 4, 5])
    c.start(1); snap("1345", [1, 3, 4, 5])  # again: the `quick` scenario's order
    c.start(2); c.stop(4); snap("1235", [1, 2, 3, 5])
    c.stop(2); snap("135", [1, 3, 5])
    c.start(2); c.stop(5); c.stop(3); c.start(4); snap("124", [1, 2, 4])
    c.start(3); c.stop(1); snap("2345b", [2, 3, 4])  # placeholder
finally:
    for i in list(c.procs): c.stop(i)
    c.stop_all()
json.dump(out, open(f"{BASE}/rings.json", "w"))
print({k: len(v) for k, v in out.items()})
