"""Minimal lock repro: 3 nodes; clients loop SET lock:0 <tok> NX PX 2000 (+release) through the survivors;
kill -9 (or SIGSTOP with MODE=stop) lock:0's primary at 5 s; report grants that took > 250 ms and simultaneous OKs.
  python3 lockrepro.py TAG [MODE=kill|stop] [BG=1 adds INCR load]"""
import json, os, signal, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctl import *
from load import Conn, Pool, RELEASE
from owners import owners
tag = sys.argv[1]; mode = os.environ.get("MODE", "kill"); bg = os.environ.get("BG") == "1"
run = f"{BASE}/runs/lockrepro-{tag}"; os.system(f"rm -rf {run}")
c = Cluster(run, seeds=(1, 2, 3, 4, 5))
KEY = os.environ.get("KEY", "lock:0")
pre = os.environ.get("PRE_EVENT", "")
nodes = (1, 2, 3, 4) if pre == "join" else (1, 2, 3)
prim, repl = owners("".join(map(str, nodes)), KEY)
others = [i for i in nodes if i != prim]
c.log(f"{KEY}: primary node{prim}, replica node{repl}; clients on {others}")
recs = []; stop = False; lk = threading.Lock()
def locker(n, port):
    cc = None; k = 0
    while not stop:
        k += 1; tok = f"c{n}-{k}"
        try:
            if cc is None: cc = Conn(port)
            ts = time.time(); r = cc.cmd("SET", KEY, tok, "NX", "PX", 2000); te = time.time()
        except Exception as e:
            cc = None; time.sleep(0.05); continue
        rec = {"c": n, "port": port, "ts": ts, "te": te, "r": str(r)}
        if r == "OK":
            time.sleep(0.05)
            try: rec["rel"] = cc.cmd("EVAL", RELEASE, 1, KEY, tok); rec["rs"] = time.time()
            except Exception as e: rec["rel"] = str(e); cc = None
        else:
            time.sleep(0.01)
        with lk: recs.append(rec)
def incr(port):
    cc = None
    while not stop:
        try:
            if cc is None: cc = Conn(port)
            cc.cmd("INCR", f"ctr:{port % 5}")
        except Exception: cc = None; time.sleep(0.05)
try:
    for i in (1, 2, 3): c.start(i)
    c.log(f"{KEY}: primary node{prim}, replica node{repl}; clients on {others}")
    c.wait_converged({1, 2, 3}); time.sleep(2.5)
    if pre == "join":
        c.start(4); c.wait_converged({1, 2, 3, 4}); time.sleep(float(os.environ.get("PRE_WAIT", 20)))
    if pre == "restart":
        c.stop(repl); c.wait_converged(set(nodes) - {repl}); c.start(repl); c.wait_converged(set(nodes)); time.sleep(float(os.environ.get("PRE_WAIT", 20)))
    ths = [threading.Thread(target=locker, args=(n, resp_port(others[n % len(others)]))) for n in range(4)]
    if bg: ths += [threading.Thread(target=incr, args=(resp_port(o),)) for o in others for _ in range(2)]
    for t in ths: t.start()
    t0 = time.time(); time.sleep(5)
    if mode == "kill": c.stop(prim, signal.SIGKILL)
    else: c.sig(prim, signal.SIGSTOP)
    tk = time.time()
    time.sleep(12)
    if mode == "stop": c.sig(prim, signal.SIGCONT); time.sleep(8)
    stop = True
    for t in ths: t.join(20)
finally:
    stop = True
    for i in list(c.procs): c.stop(i)
    c.stop_all()
late = [r for r in recs if r["r"] == "OK" and r["te"] - r["ts"] > 0.25]
oks = sorted([r for r in recs if r["r"] == "OK"], key=lambda r: r["te"])
sim = [(a, b) for i, a in enumerate(oks) for b in oks[i+1:i+5] if b["te"] < min(a.get("rs", a["te"]), a["ts"] + 2)]
errs = {}
for r in recs:
    if r["r"] not in ("OK", "None"): errs[r["r"][:70]] = errs.get(r["r"][:70], 0) + 1
print(f"{len(recs)} SET NX; {len(oks)} OK; errors {errs}")
print(f"grants > 250 ms: {len(late)}:", [(round(r['ts']-tk, 3), round(r['te']-r['ts'], 3), r['port'], r.get('rel')) for r in late])
print(f"simultaneous OK holders: {len(sim)}:", [((round(a['te']-tk,3), a['port'], a.get('rel')), (round(b['te']-tk,3), b['port'], b.get('rel'))) for a, b in sim[:5]])
json.dump(recs, open(f"{run}/recs.json", "w"))
