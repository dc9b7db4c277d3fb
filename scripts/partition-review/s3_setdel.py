"""Scenario 3/4/5: preload N keys, read them all through node ISO (so it holds copies), isolate ISO
(peer traffic only: clients still reach it) for CUT s. During the cut, from the majority: DEL group D,
overwrite group U, create group N, leave group K; meanwhile poll reads on ISO and try writes on ISO.
Heal; time convergence; then read every key from every node for VERIFY s and report each
stale / resurrected / missing value.
env: ISO(1) CUT(12) N(3000) VERIFY(15) MODE(peer|in|out)"""
import os, threading, time, collections, random
from common import *

ISO = int(os.environ.get("ISO", 1)); CUT = float(os.environ.get("CUT", 12)); N = int(os.environ.get("N", 3000))
VERIFY = float(os.environ.get("VERIFY", 15)); MODE = os.environ.get("MODE", "peer")
others = [n for n in (1, 2, 3) if n != ISO]
ow = slot_owners()
keys = [f"k:{i}" for i in range(N)]
G = {"D": keys[0::3], "U": keys[1::3], "K": keys[2::3]}
NEW = [f"new:{i}" for i in range(N // 6)]
iso_owned = {k for k in keys if IPS[ISO] in ow[keyslot(k)]}
log(f"{len(iso_owned)} of {N} keys owned by node{ISO}")
r2 = cli(others[0], 20)
p = r2.pipeline(transaction=False)
for k in keys: p.set(k, f"v0:{k}")
p.execute()
# node ISO reads everything (L1/L3 copies), twice
ri = cli(ISO, 5)
for _ in range(2):
    vs = ri.mget(keys)
    assert all(v == f"v0:{k}".encode() for k, v in zip(keys, vs)), "preload not readable on ISO"
log("preloaded and read through node", ISO)
expect = {k: f"v0:{k}".encode() for k in keys}   # acknowledged state (None = deleted)
indet = set()
stop = threading.Event()
lk = threading.Lock()
iso_reads = []  # (t since cut, stale_D, stale_U, errors, n)
iso_writes = collections.Counter(); iso_acked = {}; iso_log = []; tc0 = [now()]


def majority_writer(n, part_keys, op):
    r = cli(n, 15)
    for k in part_keys:
        while not stop.is_set():
            try:
                if op == "D": r.delete(k); v = None
                elif op == "U": v = f"v1:{k}".encode(); r.set(k, v)
                else: v = f"n:{k}".encode(); r.set(k, v)
                with lk: expect[k] = v
                break
            except Exception as e:
                if classify(e) == "indet":
                    with lk: indet.add(k)
                    break
                time.sleep(0.2)  # refused: retry


def iso_reader(t_cut):
    r = cli(ISO, 3)
    sd = random.sample(G["D"], 150); su = random.sample(G["U"], 150)
    while not stop.is_set():
        t = time.time() - t_cut
        try:
            vd = r.mget(sd); vu = r.mget(su)
            with lk:
                stD = (sum(1 for k, v in zip(sd, vd) if v is not None and expect[k] is None and k not in iso_owned),
                       sum(1 for k, v in zip(sd, vd) if v is not None and expect[k] is None and k in iso_owned))
                stU = (sum(1 for k, v in zip(su, vu) if v == f"v0:{k}".encode() and expect[k] != v and k not in iso_owned),
                       sum(1 for k, v in zip(su, vu) if v == f"v0:{k}".encode() and expect[k] != v and k in iso_owned))
                nilU = sum(1 for k, v in zip(su, vu) if v is None)
            iso_reads.append((round(t, 2), stD, stU, nilU, "ok"))
        except Exception as e:
            iso_reads.append((round(t, 2), None, None, None, str(e)[:60]))
        time.sleep(0.25)


def iso_writer():
    r = cli(ISO, 15)
    i = 0
    while not stop.is_set():
        k = f"isow:{i}"; i += 1
        t = now()
        try:
            r.set(k, b"x"); iso_writes["ack"] += 1; iso_acked[k] = (round(t - (tc0[0]), 2), round(now() - tc0[0], 2))
        except Exception as e:
            iso_writes[classify(e)] += 1; iso_log.append((round(t - tc0[0], 2), round(now() - tc0[0], 2), str(e)[:70]))
            if classify(e) == "indet": indet.add(k)
            time.sleep(0.1)


log(f"cut node{ISO} mode={MODE}")
if MODE == "peer": part("isolate", ISO)
elif MODE == "in":
    for o in others: part("cut", o, ISO)
elif MODE == "out":
    for o in others: part("cut", ISO, o)
tc = time.time(); tc0[0] = now()
ths = [threading.Thread(target=iso_reader, args=(tc,), daemon=True), threading.Thread(target=iso_writer, daemon=True)]
for g, n in (("D", others[0]), ("U", others[1])):
    ks = sorted(G[g], key=lambda k: k in iso_owned)  # keys node ISO does not own first (acked at once)
    for j in range(4):
        ths.append(threading.Thread(target=majority_writer, args=(n, ks[j::4], g), daemon=True))
for j in range(2):
    ths.append(threading.Thread(target=majority_writer, args=(others[j], NEW[j::2], "N"), daemon=True))
for t in ths: t.start()
time.sleep(CUT)
# heal
part("heal"); th = time.time(); log("healed")
conv = {}
def conv_mon():
    conv["t"] = wait_agreed(th, 60)
cm = threading.Thread(target=conv_mon); cm.start()
time.sleep(1.0)
stop.set()
for t in ths: t.join(20)
log("majority ops acked:", {g: sum(1 for k in G[g] if (expect[k] is None if g == "D" else expect[k] == f"v1:{k}".encode())) for g in ("D", "U")},
    "new acked:", sum(1 for k in NEW if k in expect), "indeterminate:", len(indet))
log("node ISO writes (t rel. cut): counts", dict(iso_writes), "acked (sent, answered):", list(iso_acked.items())[:6])
for x in iso_log[:8]: log("  iso write error (sent, answered, msg)", x)
# staleness timeline on ISO
first_ok = [x for x in iso_reads if x[4] == "ok"]
def last_stale(idx, j=None):
    s = [x[0] for x in first_ok if (x[idx][j] if j is not None else x[idx])]
    return (min(s), max(s)) if s else None
log("ISO read passes:", len(iso_reads), "errors:", sum(1 for x in iso_reads if x[4] != "ok"),
    "stale-deleted (unowned, owned) seen t=", last_stale(1, 0), last_stale(1, 1), "stale-overwritten (unowned, owned) t=", last_stale(2, 0), last_stale(2, 1), "nil-for-U t=", last_stale(3))
for x in iso_reads[::2]: log("  iso read", x)
cm.join()
log("convergence after heal:", conv["t"])
# verify
for k in iso_acked: expect.setdefault(k, b"x")
for k in NEW: expect.setdefault(k, None) if k in indet else None
viol = collections.Counter(); examples = collections.defaultdict(list); lastbad = {}
allk = keys + [k for k in NEW if k in expect] + list(iso_acked)
tv = time.time(); passes = 0
while time.time() - tv < VERIFY:
    passes += 1
    for n in (1, 2, 3):
        try:
            vs = cli(n, 10).mget(allk)
        except Exception as e:
            viol[(n, "error")] += 1; continue
        for k, v in zip(allk, vs):
            if k in indet: continue
            e = expect[k]
            if v == e: continue
            kind = "resurrected" if e is None else ("missing" if v is None else "stale/wrong")
            viol[(n, kind)] += 1; lastbad[(n, kind)] = round(time.time() - th, 2)
            if len(examples[(n, kind)]) < 3: examples[(n, kind)].append((k, v, e, ow[keyslot(k)] if k.startswith("k:") else ""))
    time.sleep(0.5)
log(f"verify: {passes} passes over {len(allk)} keys x 3 nodes")
for kk, c in sorted(viol.items()):
    log("VIOLATION", kk, c, "last seen t_after_heal=", lastbad.get(kk), "ex:", examples[kk])
# final state (last pass) summary per node
for n in (1, 2, 3):
    vs = cli(n, 10).mget(allk)
    bad = collections.Counter()
    for k, v in zip(allk, vs):
        if k in indet or v == expect[k]: continue
        bad["resurrected" if expect[k] is None else ("missing" if v is None else "stale")] += 1
    log(f"final node{n}:", dict(bad) or "all correct")
log("gens", gens())
print("RESULT", "VIOLATIONS" if viol else "PASS")
