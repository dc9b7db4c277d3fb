"""Minimal reproduction: INCR load (2 clients per node) on counters owned by every pair of nodes, then a
fixed partition schedule SEQ, e.g. "1:in:2.8,h:2.6,2:out:1.2,h:8" (node:mode:seconds or h:seconds = healed).
mode in = node receives nothing from its peers; out = its packets to peers are dropped; peer = both.
Check: final counter == acknowledged increments (+ indeterminate) and no INCR result acknowledged twice."""
import os, threading, time, collections
from common import *

SEQ = os.environ.get("SEQ", "1:in:2.8,h:2.6,2:out:1.2,h:8")
ow = slot_owners()
ckeys = keys_owned("ctr:a", 1, 2, 1, ow) + keys_owned("ctr:b", 2, 1, 1, ow) + keys_owned("ctr:c", 2, 3, 1, ow) \
    + keys_owned("ctr:d", 3, 2, 1, ow) + keys_owned("ctr:e", 3, 1, 1, ow) + keys_owned("ctr:f", 1, 3, 1, ow)
lk = threading.Lock(); stop = threading.Event()
cst = {k: collections.Counter() for k in ckeys}; ctl = {k: [] for k in ckeys}


def counter(n, w):
    r = cli(n, 3); i = w
    while not stop.is_set():
        k = ckeys[i % len(ckeys)]; i += 1
        try:
            v = r.incr(k)
            with lk: cst[k]["ack"] += 1; ctl[k].append((round(now(), 3), v, n))
        except Exception as e:
            with lk: cst[k][classify(e)] += 1
            time.sleep(0.05)


ths = [threading.Thread(target=counter, args=(n, w), daemon=True) for n in (1, 2, 3) for w in range(2)]
for t in ths: t.start()
time.sleep(3)
for step in SEQ.split(","):
    f = step.split(":")
    if f[0] == "h":
        part("heal"); log("heal"); time.sleep(float(f[1])); continue
    n, mode, secs = int(f[0]), f[1], float(f[2]); others = [o for o in (1, 2, 3) if o != n]
    if mode == "peer": part("isolate", n)
    elif mode == "in":
        for o in others: part("cut", o, n)
    else:
        for o in others: part("cut", n, o)
    log(f"cut node{n} {mode} for {secs}s"); time.sleep(secs)
part("heal")
conv = wait_agreed(time.time(), 60); log("agreed", conv)
time.sleep(2); stop.set()
for t in ths: t.join(5)
bad = 0
for k in ckeys:
    fin = {n: cli(n).get(k) for n in (1, 2, 3)}
    s = cst[k]; f = int(fin[2] or 0); vals = [v for _, v, _ in ctl[k]]
    dup = len(vals) - len(set(vals))
    ok = s["ack"] <= f <= s["ack"] + s["indet"] and dup == 0 and len(set(fin.values())) == 1
    bad += not ok
    log(f"{k} owners={ow[keyslot(k)]} ack={s['ack']} indet={s['indet']} refused={s['refused']} final={fin} dup={dup} {'OK' if ok else 'VIOLATION'}")
    mx = 0; shown = 0
    for t, v, nn in ctl[k]:
        if v < mx - 20 and shown < 2:
            log(f"   BACKWARDS t={t}: node{nn} INCR answered {v} after {mx} was acknowledged"); shown += 1
        mx = max(mx, v)
print("RESULT", "VIOLATIONS" if bad else "PASS", bad)
