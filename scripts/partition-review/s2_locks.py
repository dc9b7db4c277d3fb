"""Scenario 2: SET lock NX PX 5000 from 2 clients per node on 3 lock keys (primary on ISO, replica on ISO,
not on ISO); holders hold HOLD s then release with a compare-and-delete script. Partition ISO (MODE) at
PRE s for CUT s; optionally FLAP (partition/heal every 1-3 s for FLAP s instead). Check: never two holders.
Definite violation: grant A answered before grant B was sent, and B answered before A's lock could
have lapsed (A.send + 5000 ms) or been released (A.release_send)."""
import os, threading, time, random, collections
from common import *

ISO = int(os.environ.get("ISO", 1)); CUT = float(os.environ.get("CUT", 12)); MODE = os.environ.get("MODE", "peer")
PRE = float(os.environ.get("PRE", 5)); POST = float(os.environ.get("POST", 10)); HOLD = float(os.environ.get("HOLD", 0.7))
FLAP = float(os.environ.get("FLAP", 0)); PX = int(os.environ.get("PX", 5000))
others = [n for n in (1, 2, 3) if n != ISO]
ow = slot_owners()
locks = keys_owned("lock:a", ISO, None, 1, ow) + keys_owned("lock:b", others[0], ISO, 1, ow) + keys_owned("lock:c", others[0], others[1], 1, ow)
log("locks", {k: ow[keyslot(k)] for k in locks})
REL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
grants = collections.defaultdict(list)  # key -> [(send, recv, rel_send, node, token)]
errs = collections.Counter(); lk = threading.Lock(); stop = threading.Event()
attempts = collections.Counter()


def client(n, cid):
    r = cli(n, PX / 1000 + 1)
    i = 0
    while not stop.is_set():
        k = locks[i % len(locks)]; i += 1
        tok = f"{n}-{cid}-{i}"
        ts = time.time()
        try:
            ok = r.set(k, tok, nx=True, px=PX)
            tr = time.time()
            attempts[(n, "ok" if ok else "held")] += 1
            if ok:
                time.sleep(HOLD)
                trel = time.time()
                try: r.eval(REL, 1, k, tok)
                except Exception as e: errs[(n, "release", classify(e), str(e)[:60])] += 1
                with lk: grants[k].append((ts, tr, trel, n, tok))
            else:
                time.sleep(0.02)
        except Exception as e:
            attempts[(n, classify(e))] += 1; errs[(n, "acquire", classify(e), str(e)[:60])] += 1
            time.sleep(0.05)


ths = [threading.Thread(target=client, args=(n, c), daemon=True) for n in (1, 2, 3) for c in range(2)]
for t in ths: t.start()
time.sleep(PRE)
def cut():
    if MODE == "peer": part("isolate", ISO)
    elif MODE == "in":
        for o in others: part("cut", o, ISO)
    elif MODE == "out":
        for o in others: part("cut", ISO, o)
if FLAP:
    t0 = time.time(); nflap = 0
    while time.time() - t0 < FLAP:
        cut(); time.sleep(random.uniform(1, 3)); part("heal"); time.sleep(random.uniform(1, 3)); nflap += 1
    log("flaps:", nflap)
else:
    log("cut"); cut(); time.sleep(CUT); part("heal"); log("healed")
time.sleep(POST)
stop.set()
for t in ths: t.join(PX / 1000 + 3)
viol = []
for k in locks:
    g = sorted(grants[k], key=lambda x: x[1])
    for a in g:
        for b in g:
            if a is b: continue
            if a[1] < b[0] and b[1] < min(a[0] + PX / 1000, a[2]):
                viol.append((k, a, b))
    log(f"{k} owners={ow[keyslot(k)]} grants={len(g)} by node={collections.Counter(x[3] for x in g)} max grant latency={max((x[1]-x[0] for x in g), default=0):.3f}s")
log("attempts", dict(attempts))
for e, c in errs.most_common(10): log("err", c, e)
for k, a, b in viol[:10]:
    log("VIOLATION two holders", k, f"A node{a[3]} sent {a[0]-T0:.3f} granted {a[1]-T0:.3f} released {a[2]-T0:.3f};",
        f"B node{b[3]} sent {b[0]-T0:.3f} granted {b[1]-T0:.3f}")
log("gens", gens())
print("RESULT", f"VIOLATIONS {len(viol)}" if viol else "PASS")
