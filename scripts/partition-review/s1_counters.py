"""Scenario 1: INCR on hot keys from clients on every node; isolate node ISO (peer traffic only,
or everything with MODE=all) for CUT seconds, heal, check final == acked (+indeterminate).
env: ISO (1), CUT (10), MODE (peer|all|in|out), PRE (5), POST (10)"""
import os, sys, threading, time, collections
from common import *

ISO = int(os.environ.get("ISO", 1)); CUT = float(os.environ.get("CUT", 10)); MODE = os.environ.get("MODE", "peer")
PRE = float(os.environ.get("PRE", 5)); POST = float(os.environ.get("POST", 10))
others = [n for n in (1, 2, 3) if n != ISO]
ow = slot_owners()
keys = keys_owned("ctr:a", ISO, others[0], 1, ow) + keys_owned("ctr:b", ISO, others[1], 1, ow) \
    + keys_owned("ctr:c", others[0], ISO, 1, ow) + keys_owned("ctr:d", others[0], others[1], 1, ow)
log("keys", {k: ow[keyslot(k)] for k in keys})
stats = {k: collections.Counter() for k in keys}
vals = {k: [] for k in keys}  # (value, node, t)
errs = collections.Counter()
lock = threading.Lock()
stop = threading.Event()
per_phase = collections.defaultdict(collections.Counter)
phase = ["pre"]


def worker(n, wid):
    r = cli(n)
    i = wid
    last = {}
    while not stop.is_set():
        k = keys[i % len(keys)]; i += 1
        t = now()
        try:
            v = r.incr(k)
            with lock:
                stats[k]["ack"] += 1; vals[k].append((v, n, t)); per_phase[phase[0]][(n, "ack")] += 1
                if k in last and v <= last[k]:
                    stats[k]["backwards_same_client"] += 1
                last[k] = v
        except Exception as e:
            c = classify(e)
            with lock:
                stats[k][c] += 1; errs[(n, c, str(e)[:90])] += 1; per_phase[phase[0]][(n, c)] += 1
            time.sleep(0.05)


ths = [threading.Thread(target=worker, args=(n, w), daemon=True) for n in (1, 2, 3) for w in range(2)]
for t in ths: t.start()
time.sleep(PRE)
phase[0] = "cut"
log(f"cut node{ISO} mode={MODE}")
if MODE == "peer": part("isolate", ISO)
elif MODE == "all": part("isolate_all", ISO)
elif MODE == "in":  # node ISO receives nothing from peers, can send
    for o in others: part("cut", o, ISO)
elif MODE == "out":  # node ISO's packets to peers are dropped, it receives
    for o in others: part("cut", ISO, o)
tc = time.time()
while time.time() - tc < CUT:
    time.sleep(1); log("during cut: health", {n: health(n) for n in (1, 2, 3)})
part("heal"); th = time.time(); phase[0] = "post"
log("healed")
time.sleep(POST)
stop.set()
for t in ths: t.join(5)
conv = wait_agreed(th, 60)
log(f"agreed {conv:.1f}s after heal" if conv else "NOT AGREED 60s after heal")
time.sleep(2)
bad = 0
for k in keys:
    finals = {}
    for n in (1, 2, 3):
        try: finals[n] = cli(n).get(k)
        except Exception as e: finals[n] = f"ERR {e}"
    s = stats[k]
    acked_vals = [v for v, _, _ in vals[k]]
    dup = len(acked_vals) - len(set(acked_vals))
    f = finals[2]; f = int(f) if isinstance(f, bytes) else f
    ok = isinstance(f, int) and s["ack"] <= f <= s["ack"] + s["indet"] and dup == 0 and max(acked_vals, default=0) <= f \
        and len(set(map(str, finals.values()))) == 1
    if not ok: bad += 1
    log(f"{k} owners={ow[keyslot(k)]} ack={s['ack']} indet={s['indet']} refused={s['refused']} final={finals} "
        f"dup_acked_values={dup} max_acked={max(acked_vals, default=0)} same_client_backwards={s['backwards_same_client']} {'OK' if ok else 'VIOLATION'}")
    if dup:
        c = collections.Counter(acked_vals)
        d = [(v, [(n, round(t, 2)) for vv, n, t in vals[k] if vv == v]) for v, m in c.items() if m > 1][:5]
        log("  duplicate acked values:", d)
for p in ("pre", "cut", "post"):
    log(p, dict(per_phase[p]))
for e, c in errs.most_common(12): log("err", c, e)
log("gens", gens())
print("RESULT", "VIOLATIONS" if bad else "PASS", bad)
