"""Scenario 6: flapping partitions under load. For FLAP s: isolate a node (ISO, or a random one with
ISO=rand; MODE peer|in|out|mix) for 1-3 s (CUT=LOW,HIGH), heal for 1-3 s (MEND=LOW,HIGH). Load: INCR counters (2 clients/node),
SET/DEL writers (1/node, own key pool, sequential), lock clients (as s2). Then heal, settle, verify:
counters acked <= final <= acked+indet, no duplicate INCR results; SET/DEL final == last acked op
(or an indeterminate op issued after it; one issued before it is reported, not counted) on every node; no two lock holders."""
import os, threading, time, random, collections
from common import *

FLAP = float(os.environ.get("FLAP", 60)); ISOS = os.environ.get("ISO", "1"); MODE = os.environ.get("MODE", "peer")
SEED = int(os.environ.get("SEED", 1)); PX = 5000; HOLD = 0.7
# Cut and mend lengths in seconds, "LOW,HIGH" (CUT=5,8: cuts longer than failure detection).
CUT = tuple(float(x) for x in os.environ.get("CUT", "1,3").split(","))
MEND = tuple(float(x) for x in os.environ.get("MEND", "1,3").split(","))
random.seed(SEED)
ow = slot_owners()
ckeys = keys_owned("ctr:a", 1, 2, 1, ow) + keys_owned("ctr:b", 2, 3, 1, ow) + keys_owned("ctr:c", 3, 1, 1, ow)
locks = keys_owned("lock:a", 1, None, 1, ow) + keys_owned("lock:b", 2, None, 1, ow) + keys_owned("lock:c", 3, None, 1, ow)
lk = threading.Lock(); stop = threading.Event()
cst = {k: collections.Counter() for k in ckeys}; ctl = {k: [] for k in ckeys}; cvals = {k: [] for k in ckeys}
ops = collections.defaultdict(list)  # key -> [(seq, kind, value, outcome)]
grants = collections.defaultdict(list); errs = collections.Counter()
REL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def counter(n, w):
    r = cli(n, 3); i = w
    while not stop.is_set():
        k = ckeys[i % len(ckeys)]; i += 1
        try:
            v = r.incr(k)
            with lk: cst[k]["ack"] += 1; cvals[k].append(v); ctl[k].append((round(now(), 3), v, n))
        except Exception as e:
            with lk: cst[k][classify(e)] += 1; errs[("incr", n, classify(e), str(e)[:50])] += 1
            time.sleep(0.05)


def setdel(n):
    r = cli(n, 12); pool = [f"sd:{n}:{i}" for i in range(300)]; seq = 0
    while not stop.is_set():
        k = random.choice(pool); seq += 1
        kind = "del" if random.random() < 0.3 else "set"
        # The value names when it was sent (script time), to match with the nodes' logs.
        val = None if kind == "del" else f"{k}:{seq}@{now():.2f}".encode()
        sent = round(now(), 2); why = ""
        try:
            r.delete(k) if kind == "del" else r.set(k, val)
            out = "ack"
        except Exception as e:
            out = classify(e); why = str(e)[:120]; errs[("setdel", n, out, str(e)[:50])] += 1; time.sleep(0.05)
        with lk: ops[k].append((seq, kind, val, out, round(now(), 2), sent, why))


def locker(n, c):
    r = cli(n, PX / 1000 + 1); i = 0
    while not stop.is_set():
        k = locks[i % len(locks)]; i += 1; tok = f"{n}-{c}-{i}"; ts = time.time()
        try:
            if r.set(k, tok, nx=True, px=PX):
                tr = time.time(); time.sleep(HOLD); trel = time.time()
                try: r.eval(REL, 1, k, tok)
                except Exception: pass
                with lk: grants[k].append((ts, tr, trel, n))
            else: time.sleep(0.02)
        except Exception as e:
            errs[("lock", n, classify(e), str(e)[:50])] += 1; time.sleep(0.05)


STATIC = int(os.environ.get("STATIC", 6000))
skeys = [f"st:{i}" for i in range(STATIC)]
rp = cli(2, 30).pipeline(transaction=False)
for k in skeys: rp.set(k, f"s:{k}")
rp.execute()
sdel = skeys[::4]
rp = cli(3, 30).pipeline(transaction=False)
for k in sdel: rp.delete(k)
rp.execute()
for n in (1, 2, 3): cli(n, 30).mget(skeys)  # every node holds copies (L1/L3)
sdel = set(sdel)
log(f"static: {STATIC} keys set, {len(sdel)} of them deleted, read through every node; "
    f"script time 0 is {time.strftime('%H:%M:%S', time.gmtime(T0))}.{int(T0 * 1000) % 1000:03d} UTC")
ths = [threading.Thread(target=counter, args=(n, w), daemon=True) for n in (1, 2, 3) for w in range(2)]
ths += [threading.Thread(target=setdel, args=(n,), daemon=True) for n in (1, 2, 3)]
ths += [threading.Thread(target=locker, args=(n, c), daemon=True) for n in (1, 2, 3) for c in range(2)]
for t in ths: t.start()
time.sleep(3)
t0 = time.time(); flaps = []
# The cuts' own generator: the same SEED gives the same schedule whatever the clients draw.
sched = random.Random(SEED)
while time.time() - t0 < FLAP:
    iso = sched.choice((1, 2, 3)) if ISOS == "rand" else int(ISOS)
    mode = sched.choice(("peer", "in", "out")) if MODE == "mix" else MODE
    others = [o for o in (1, 2, 3) if o != iso]
    if mode == "peer": part("isolate", iso)
    elif mode == "in":
        for o in others: part("cut", o, iso)
    else:
        for o in others: part("cut", iso, o)
    a = sched.uniform(*CUT); time.sleep(a); part("heal"); b = sched.uniform(*MEND); time.sleep(b)
    flaps.append((round(time.time() - T0 - a - b, 2), iso, mode, round(a, 1), round(b, 1)))
th = time.time()
log(f"{len(flaps)} flaps:", flaps)
conv = wait_agreed(th, 60)
log("agreed after final heal:", conv)
time.sleep(3)
stop.set()
for t in ths: t.join(15)
time.sleep(2)
bad = 0
for k in ckeys:
    fin = {n: cli(n).get(k) for n in (1, 2, 3)}
    s = cst[k]; f = int(fin[2] or 0); dup = len(cvals[k]) - len(set(cvals[k]))
    ok = s["ack"] <= f <= s["ack"] + s["indet"] and dup == 0 and len(set(fin.values())) == 1 and max(cvals[k], default=0) <= f
    bad += not ok
    if not ok:
        mx = 0; shown = 0
        for t, v, nn in ctl[k]:
            if v < mx - 20 and shown < 3:
                log(f"  BACKWARDS at t={t}: node{nn} INCR answered {v} after {mx} had been acknowledged"); shown += 1
            mx = max(mx, v)
        c = collections.Counter(cvals[k]); d = sorted(v for v, m in c.items() if m > 1)
        if d: log(f"  duplicated acked values: {len(d)} from {d[0]} to {d[-1]}; first dup acks:",
                  [(t, v, nn) for t, v, nn in ctl[k] if v == d[0]])
        by = collections.defaultdict(list)
        for t, v, nn in ctl[k]: by[int(t)].append((v, nn))
        for sec in sorted(by):
            vs = by[sec]
            log(f"   t={sec}s acks={len(vs)} min={min(v for v,_ in vs)} max={max(v for v,_ in vs)} nodes={dict(collections.Counter(nn for _,nn in vs))}") if any(v in c and c[v] > 1 for v, _ in vs) else None
    log(f"counter {k} owners={ow[keyslot(k)]} ack={s['ack']} indet={s['indet']} refused={s['refused']} final={fin} dup={dup} {'OK' if ok else 'VIOLATION'}")
sdbad = collections.Counter(); ex = []
allk = sorted(ops)
for n in (1, 2, 3):
    vals = dict(zip(allk, cli(n, 10).mget(allk)))
    for k in allk:
        o = ops[k]
        acked = [x for x in o if x[3] == "ack"]
        last = acked[-1] if acked else None
        allowed = {last[2] if last else None} | {x[2] for x in o if x[3] == "indet" and (last is None or x[0] > last[0])}
        if not acked: allowed |= {x[2] for x in o if x[3] == "indet"}
        v = vals[k]
        if v in allowed: continue
        # An indeterminate SET issued before the last acknowledged op may still take
        # effect after it (docs/semantics.md: unknown outcomes): reported, not a violation.
        late = any(x[3] == "indet" and x[2] == v for x in o)
        kind = "indet-landed-late" if late else ("resurrected" if last and last[2] is None else ("lost" if v is None else "stale"))
        sdbad[(n, kind)] += 1
        if len(ex) < 8: ex.append((n, kind, k, v, "last acked:", last, ow[keyslot(k)]))
nops = sum(len(o) for o in ops.values()); nack = sum(1 for o in ops.values() for x in o if x[3] == "ack")
log(f"set/del: {len(allk)} keys, {nops} ops, {nack} acked; mismatches: {dict(sdbad) or 'none'}")
for e in ex:
    log("  SETDEL", e)
    # The key's history around the value read back and its last operations.
    o = ops[e[2]]
    at = [i for i, x in enumerate(o) if x[2] == e[3]]
    near = sorted(set(range(max(0, at[0] - 2), min(len(o), at[0] + 3)) if at else set()) | set(range(max(0, len(o) - 4), len(o))))
    log("    history:", [o[i] for i in near])
stbad = collections.Counter(); stex = []
for n in (1, 2, 3):
    for k, v in zip(skeys, cli(n, 30).mget(skeys)):
        e = None if k in sdel else f"s:{k}".encode()
        if v != e:
            kind = "resurrected" if e is None else ("lost" if v is None else "wrong")
            stbad[(n, kind)] += 1
            if len(stex) < 6: stex.append((n, kind, k, v, ow[keyslot(k)]))
log(f"static keys: mismatches {dict(stbad) or 'none'}", stex)
sdbad.update(stbad)
late = sum(c for (n, kind), c in sdbad.items() if kind == "indet-landed-late")
if late: log(f"{late} reads of a value whose SET's outcome was unknown, applied after later acknowledged ops (allowed)")
sdbad = collections.Counter({k: c for k, c in sdbad.items() if k[1] != "indet-landed-late"})
lv = 0
for k in locks:
    g = sorted(grants[k], key=lambda x: x[1])
    for a in g:
        for b in g:
            if a is not b and a[1] < b[0] and b[1] < min(a[0] + PX / 1000, a[2]):
                lv += 1; log("  LOCK two holders", k, [round(x - T0, 3) for x in a[:3]], a[3], [round(x - T0, 3) for x in b[:2]], b[3])
    log(f"lock {k}: {len(g)} grants, by node {dict(collections.Counter(x[3] for x in g))}")
for e, c in errs.most_common(8): log("err", c, e)
log("gens", gens())
print("RESULT", "VIOLATIONS" if (bad or sdbad or lv) else "PASS", bad, dict(sdbad), lv)
