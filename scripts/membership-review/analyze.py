"""Check a run's records: python3 analyze.py RUNDIR  (reads RUNDIR/load/*.jsonl and RUNDIR/final.json)"""
import collections, glob, json, sys


def load(rundir):
    recs = collections.defaultdict(list)
    for fn in glob.glob(f"{rundir}/load/*.jsonl"):
        for line in open(fn):
            try:
                r = json.loads(line)
            except Exception:
                continue
            r["file"] = fn.rsplit("/", 1)[1]
            recs[r["op"]].append(r)
    return recs


def fmt_t(t, t0):
    return f"{t - t0:8.3f}"


def analyze(rundir, quiet=False):
    recs = load(rundir)
    try:
        final = json.load(open(f"{rundir}/final.json"))
    except Exception:
        final = {}
    t0 = final.get("t0") or min((r["ts"] for rs in recs.values() for r in rs), default=0)
    out = []
    viol = []
    P = out.append

    # ---- counters
    incr = recs.get("incr", [])
    kinds = collections.Counter((r["kind"], r.get("cls")) for r in incr)
    P(f"INCR: {len(incr)} ops; outcomes {dict(kinds)}")
    errs = collections.Counter(r["v"][:60] for r in incr if r["kind"] in ("err", "indet"))
    P(f"  errors: {dict(errs.most_common(8))}")
    by = collections.defaultdict(list)
    for r in incr:
        by[r["key"]].append(r)
    for key in sorted(by):
        rs = by[key]
        acked = [r for r in rs if r["kind"] == "ok"]
        indet = [r for r in rs if r["kind"] == "indet" or (r["kind"] == "err" and r.get("cls") != "fail")]
        vals = collections.Counter(r["v"] for r in acked)
        dups = {v: c for v, c in vals.items() if c > 1}
        fin = final.get("counters", {}).get(key, {})
        fvals = {p: v for p, v in fin.items()}
        fs = set(v for v in fvals.values() if isinstance(v, int))
        F = max(fs) if fs else None
        A, I = len(acked), len(indet)
        mx = max(vals) if vals else 0
        line = f"  {key}: acked={A} indet={I} max_acked_value={mx} final={fvals}"
        P(line)
        if len(fs) > 1:
            viol.append(f"{key}: nodes disagree on final value {fvals}")
        if dups:
            ex = sorted(dups)[:5]
            det = []
            for v in ex:
                for r in acked:
                    if r["v"] == v:
                        det.append(f"v={v} port={r['port']} t={fmt_t(r['ts'],t0)}..{fmt_t(r['te'],t0)} {r['file']}")
            viol.append(f"{key}: {len(dups)} values acknowledged twice, e.g. " + "; ".join(det[:6]))
        if F is not None:
            if F < A:
                viol.append(f"{key}: counter ended {F}, acknowledged {A} (lost {A - F})")
            if F > A + I:
                viol.append(f"{key}: counter ended {F} > acknowledged {A} + indeterminate {I}")
            if mx > F:
                viol.append(f"{key}: an INCR acknowledged value {mx} but final is {F}")
        # sequence regressions: acked values in time order (a reply lower than one acked
        # before it was sent)
        srt = sorted(acked, key=lambda r: r["te"])
        regress = []
        best = None  # highest value whose ack came before
        for r in sorted(acked, key=lambda r: r["ts"]):
            pass
        acks_by_te = sorted(acked, key=lambda r: r["te"])
        import bisect
        tes = [r["te"] for r in acks_by_te]
        prefmax = []
        m = -1
        for r in acks_by_te:
            m = max(m, r["v"])
            prefmax.append(m)
        for r in acked:
            i = bisect.bisect_left(tes, r["ts"]) - 1
            if i >= 0 and prefmax[i] >= r["v"]:
                regress.append((r, prefmax[i]))
        if regress:
            r, pm = min(regress, key=lambda x: x[0]["ts"])
            viol.append(f"{key}: {len(regress)} INCRs answered a value <= one acknowledged before they were sent "
                        f"(first: v={r['v']} at {fmt_t(r['ts'],t0)} port {r['port']}, earlier ack {pm})")

    # ---- locks
    acq = recs.get("acq", [])
    kinds = collections.Counter((r["kind"], r.get("cls"), r["v"] if r["kind"] == "ok" else None) for r in acq)
    P(f"LOCK SET NX: {len(acq)} ops; outcomes {dict((str(k), v) for k, v in kinds.items())}")
    errs = collections.Counter(r["v"][:60] for r in acq if r["kind"] in ("err", "indet"))
    P(f"  errors: {dict(errs.most_common(8))}")
    held = [r for r in acq if r["kind"] == "ok" and r["v"] == "OK"]
    rel0 = [r for r in held if not (r.get("rkind") == "ok" and r.get("rv") == 1)]
    relk = collections.Counter((r.get("rkind"), str(r.get("rv"))[:50]) for r in held)
    P(f"  acquired={len(held)} release outcomes {dict((str(k), v) for k, v in relk.items())}")
    bykey = collections.defaultdict(list)
    for r in held:
        bykey[r["key"]].append(r)
    overlaps = []
    possible = 0
    for key, rs in bykey.items():
        rs.sort(key=lambda r: r["te"])
        for i, a in enumerate(rs):
            a_end = min(a.get("rs", a["te"] + 2), a["ts"] + 1.8)
            for b in rs[i + 1:]:
                if b["ts"] > a_end + 0.5:
                    break
                # b granted strictly inside a's hold: b sent after a was acked, b acked before a
                # began its release and before a's PX (cut by a tenth) could have run out
                if b["ts"] > a["te"] and b["te"] < a_end:
                    overlaps.append((key, a, b))
                elif b["te"] > a["ts"] and b["ts"] < a_end:
                    possible += 1
    P(f"  definite overlaps: {len(overlaps)}; interval intersections not provable either way: {possible}")
    for key, a, b in overlaps[:10]:
        viol.append(f"{key}: two holders: A tok={a['tok']} acked {fmt_t(a['ts'],t0)}..{fmt_t(a['te'],t0)} via {a['port']} "
                    f"release sent {fmt_t(a.get('rs',0),t0)} -> {a.get('rkind')}:{a.get('rv')}; "
                    f"B tok={b['tok']} acked {fmt_t(b['ts'],t0)}..{fmt_t(b['te'],t0)} via {b['port']}")
    if len(overlaps) > 10:
        viol.append(f"... {len(overlaps)} overlapping lock holds in all")
    # late grants: SET NX PX 2000 answered OK after more than a tenth of its TTL (+50 ms slack)
    late = [r for r in held if r["te"] - r["ts"] > 0.25]
    if late:
        worst = max(late, key=lambda r: r["te"] - r["ts"])
        viol.append(f"{len(late)} lock grants (SET NX PX 2000 -> OK) answered more than 250 ms after sending "
                    f"(doc: refused past a tenth of the TTL); worst {worst['te']-worst['ts']:.3f}s: {worst['key']} "
                    f"sent {fmt_t(worst['ts'],t0)} OK {fmt_t(worst['te'],t0)} via {worst['port']}")
    # client-perceived simultaneous holders: both got OK, [te, release sent] intervals intersect
    simul = []
    for key, rs_ in bykey.items():
        rs_ = sorted(rs_, key=lambda r: r["te"])
        for i, a in enumerate(rs_):
            for b in rs_[i + 1:]:
                if b["te"] >= a.get("rs", a["te"]):
                    break
                simul.append((key, a, b))
    P(f"  client-perceived simultaneous holders (both OK, [OK, release] intervals intersect): {len(simul)}")
    for key, a, b in simul[:6]:
        viol.append(f"{key}: simultaneous holders: {a['tok']} sent {fmt_t(a['ts'],t0)} OK {fmt_t(a['te'],t0)} via {a['port']} "
                    f"released {fmt_t(a.get('rs',0),t0)}->{a.get('rv')}; {b['tok']} sent {fmt_t(b['ts'],t0)} OK {fmt_t(b['te'],t0)} "
                    f"via {b['port']} released {fmt_t(b.get('rs',0),t0)}->{b.get('rv')}")
    lost = [r for r in rel0 if r.get("rkind") == "ok" and r.get("rv") == 0 and r["te"] - r["ts"] < 0.25
            and r["re"] < r["ts"] + 1.8]
    if lost:
        ex = lost[0]
        for ex in lost[:4]:
            nxt = [o for o in held if o["key"] == ex["key"] and o["te"] > ex["te"] and o["te"] < ex["ts"] + 2.0]
            nx = f"; next OK for {ex['key']} at {fmt_t(nxt[0]['te'],t0)} via {nxt[0]['port']} (inside this holder's PX)" if nxt else ""
            viol.append(f"lock lost while held (promptly granted, compare-and-delete 50 ms later found it not ours): "
                        f"{ex['key']} tok={ex['tok']} OK {fmt_t(ex['ts'],t0)}..{fmt_t(ex['te'],t0)} via {ex['port']}, "
                        f"release via {ex['rport']} {fmt_t(ex['rs'],t0)}..{fmt_t(ex['re'],t0)} -> 0{nx}")
        if len(lost) > 4:
            viol.append(f"... {len(lost)} locks lost while held in all")

    # ---- kv
    sets = recs.get("set", [])
    dels = recs.get("del", [])
    gets = recs.get("get", [])
    P(f"SET: {len(sets)} outcomes {dict(collections.Counter((r['kind'], r.get('cls')) for r in sets))}")
    P(f"DEL: {len(dels)} outcomes {dict(collections.Counter((r['kind'], r.get('cls'), r['v'] if r['kind']=='ok' else None) for r in dels))}")
    P(f"GET (mid-run checks of writes acked >3 s before): {len(gets)} outcomes "
      f"{dict(collections.Counter(r['kind'] for r in gets))}")
    bad_get_missing = [r for r in gets if r["kind"] == "ok" and r["want"] is not None and r["v"] is None]
    bad_get_wrong = [r for r in gets if r["kind"] == "ok" and r["want"] is not None and r["v"] not in (None, r["want"])]
    bad_get_res = [r for r in gets if r["kind"] == "ok" and r["want"] is None and r["v"] is not None]
    for name, lst in (("acknowledged SET read back missing (mid-run)", bad_get_missing),
                      ("acknowledged SET read back with another value (mid-run)", bad_get_wrong),
                      ("deleted key read back (mid-run)", bad_get_res)):
        if lst:
            ex = lst[:3]
            viol.append(f"{len(lst)} x {name}, e.g. " + "; ".join(
                f"{r['key']} acked {fmt_t(r['t_acked'],t0)} read {fmt_t(r['ts'],t0)} via {r['port']} -> {r['v']!r}" for r in ex))
    fk = final.get("kv", {})
    fm = fk.get("missing", [])
    fw = fk.get("wrong", [])
    fr = fk.get("resurrected", [])
    P(f"final kv check: {fk.get('checked_sets')} acked sets read, {fk.get('checked_dels')} deleted keys read on every node")
    if fm:
        viol.append(f"final: {len(fm)} acknowledged SETs missing, e.g. {fm[:3]}")
    if fw:
        viol.append(f"final: {len(fw)} acknowledged SETs with another value, e.g. {fw[:3]}")
    if fr:
        viol.append(f"final: {len(fr)} deleted keys back, e.g. {fr[:3]}")
    P("VIOLATIONS:" if viol else "VIOLATIONS: none")
    for v in viol:
        P("  * " + v)
    txt = "\n".join(out)
    if not quiet:
        print(txt)
    open(f"{rundir}/analysis.txt", "w").write(txt + "\n")
    return viol


if __name__ == "__main__":
    analyze(sys.argv[1])
