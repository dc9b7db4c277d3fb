"""Membership-change scenarios under load.

  python3 scenario.py NAME [RUN_TAG] [--es N]
Runs the cluster (ports 7700-7799), the load (load.py), the membership changes of NAME,
then the final checks and analyze.py. Everything it starts is stopped by pid in `finally`.
Output: runs/NAME-TAG/{timeline.txt,node*.log,node*.toml,load/*.jsonl,final.json,analysis.txt,mon.jsonl}
"""
import json, os, random, signal, socket, subprocess, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ctl import *
from load import Pool, Conn, NotSent, Indeterminate, RespError, enc
import analyze

LOAD_S = float(os.environ.get("LOAD_S", 75))


def pipeline_get(port, keys, batch=500):
    out = []
    c = Conn(port)
    c.s.settimeout(10)
    for i in range(0, len(keys), batch):
        chunk = keys[i:i + batch]
        c.s.sendall(b"".join(enc("GET", k) for k in chunk))
        for _ in chunk:
            r = c._read()
            out.append(f"<err:{r}>" if isinstance(r, RespError) else r)
    c.close()
    return out


def preload(run, n, port, t0=None):
    """SET n unique keys pre:<i> through one node, pipelined; recorded as acknowledged sets."""
    os.makedirs(f"{run.dir}/load", exist_ok=True)
    f = open(f"{run.dir}/load/preload.jsonl", "w")
    c = Conn(port)
    c.s.settimeout(30)
    batch = 500
    acked = 0
    for i in range(0, n, batch):
        keys = [(f"pre:{j}", f"p-{j}-{random.getrandbits(32):08x}") for j in range(i, min(n, i + batch))]
        ts = time.time()
        c.s.sendall(b"".join(enc("SET", k, v) for k, v in keys))
        for k, v in keys:
            r = c._read()
            te = time.time()
            ok = r == "OK"
            acked += ok
            f.write(json.dumps({"op": "set", "key": k, "val": v, "port": port, "ts": ts, "te": te,
                                "kind": "ok" if not isinstance(r, RespError) else "err", "v": r if not isinstance(r, RespError) else str(r)}) + "\n")
    f.close()
    c.close()
    run.c.log(f"preloaded {acked}/{n} keys through {port}")


def port_up(port, timeout=20):
    t = time.time()
    while time.time() - t < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Run:
    def __init__(self, name, tag, es=None):
        self.dir = f"{BASE}/runs/{name}-{tag}"
        os.system(f"rm -rf {self.dir}")
        os.makedirs(self.dir)
        self.c = Cluster(self.dir, expected_size=es, seeds=(1, 2, 3, 4, 5))
        self.ports_file = f"{self.dir}/ports.json"
        self.clients = set()
        self.load = None
        self.stop_mon = False

    def publish(self):
        self.c.write_live_ports(self.ports_file, sorted(self.clients))

    def add_clients(self, i):
        if port_up(resp_port(i)):
            self.clients.add(i)
            self.publish()
            self.c.log(f"clients now use {sorted(self.clients)}")
        else:
            self.c.log(f"node{i} RESP port never came up")

    def drop_clients(self, i):
        self.clients.discard(i)
        self.publish()
        self.c.log(f"clients now use {sorted(self.clients)}")

    def start(self, i, fresh_tag=None, clients=True):
        self.c.start(i, fresh_tag=fresh_tag)
        if clients:
            self.add_clients(i)

    def term(self, i, sig=signal.SIGTERM):
        self.drop_clients(i)
        self.c.stop(i, sig)

    def ctr_owners(self, i):
        from slots import keyslot, owners_of
        try:
            c = Conn(resp_port(i))
            c.s.settimeout(1)
            rep = c.cmd("CLUSTER", "SLOTS")
            c.close()
            keys = [f"ctr:{k}" for k in range(5)] + [f"lock:{k}" for k in range(3)]
            return {k: owners_of(rep, keyslot(k)) for k in keys}
        except Exception as e:
            return str(e)

    def monitor(self):
        f = open(f"{self.dir}/mon.jsonl", "w")
        while not self.stop_mon:
            rec = {"t": time.time()}
            for i in list(self.c.procs):
                s = self.c.summary(i)
                rec[f"node{i}"] = {"rss_kb": self.c.rss_kb(i), **s, "ctr_owners": self.ctr_owners(i)}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            time.sleep(1)

    def start_load(self):
        env = dict(os.environ)
        self.load = subprocess.Popen([sys.executable, f"{BASE}/load.py", f"{self.dir}/load", self.ports_file, str(LOAD_S)],
                                     env=env, start_new_session=True)
        with open(f"{self.dir}/pids.txt", "a") as pf:
            pf.write(f"{self.load.pid} load\n")
        self.load_t0 = time.time()
        self.c.log(f"load started pid={self.load.pid} for {LOAD_S}s")

    def at(self, t):
        """sleep until t seconds after the load started"""
        d = self.load_t0 + t - time.time()
        if d > 0:
            time.sleep(d)

    def wait_load(self):
        self.load.wait(LOAD_S + 90)
        self.c.log("load finished")

    def final_check(self):
        live = sorted(self.c.live())
        self.c.log(f"final check on {live}")
        self.c.wait_converged(set(live), timeout=30)
        time.sleep(3)
        import load as _load; _load.TIMEOUT = 3
        fin = {"t0": self.load_t0, "live": live, "counters": {}, "kv": {}}
        pool = Pool(self.ports_file)
        pool.ports = [resp_port(i) for i in live]
        pool.loaded = time.time() + 1e9

        def get(port, key):
            for _ in range(5):
                p, kind, v = pool.call("GET", key, port=port)
                if kind == "ok":
                    return v
                time.sleep(0.5)
            return f"<{kind}:{v}>"

        for k in range(5):
            key = f"ctr:{k}"
            fin["counters"][key] = {}
            for i in live:
                v = get(resp_port(i), key)
                fin["counters"][key][resp_port(i)] = int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v
        # kv
        recs = analyze.load(self.dir)
        sets = {r["key"]: r for r in recs.get("set", []) if r["kind"] == "ok" and r["v"] == "OK"}
        dels = {}
        for r in recs.get("del", []):
            dels[r["key"]] = r
        expect = {}
        for key, r in sets.items():
            d = dels.get(key)
            if d is None:
                expect[key] = r["val"]
            elif d["kind"] == "ok":
                expect[key] = None
            elif d["kind"] == "err" and d.get("cls") == "fail":
                expect[key] = r["val"]
            # indeterminate DEL: skip
        missing, wrong, res = [], [], []
        nsets = sum(1 for v in expect.values() if v is not None)
        ndels = len(expect) - nsets
        ports_all = [resp_port(i) for i in live]
        # pipelined first pass: a kept write read through one random node, a deleted key through every node
        plan = {p: [] for p in ports_all}
        for key, want in expect.items():
            if want is None:
                for p in ports_all:
                    plan[p].append(key)
            else:
                plan[random.choice(ports_all)].append(key)
        first = {}
        tfc = time.time()
        for p, keys in plan.items():
            got = pipeline_get(p, keys)
            for k, v in zip(keys, got):
                first.setdefault(k, {})[p] = v
        self.c.log(f"final kv pipelined pass: {sum(len(v) for v in plan.values())} GETs in {time.time()-tfc:.1f}s")
        suspects = [k for k, want in expect.items() if any(v != want for v in first[k].values())]
        self.c.log(f"final kv suspects: {len(suspects)}")
        if suspects:
            time.sleep(1.5)
        for key in suspects[:3000]:
            want = expect[key]
            vals = first[key]
            vals2 = {resp_port(i): get(resp_port(i), key) for i in live}
            r = sets[key]
            entry = {"key": key, "want": want, "first": vals, "again_all_nodes": vals2,
                     "set_acked": round(r["te"] - self.load_t0, 3), "set_port": r["port"]}
            if key in dels:
                entry["del_acked"] = round(dels[key]["te"] - self.load_t0, 3)
                entry["del_port"] = dels[key]["port"]
                entry["del_reply"] = dels[key]["v"]
            if want is None:
                res.append(entry)
            elif any(v is None for v in vals.values()) or any(v is None for v in vals2.values()):
                missing.append(entry)
            else:
                wrong.append(entry)
        fin["kv"] = {"checked_sets": nsets, "checked_dels": ndels, "missing": missing, "wrong": wrong, "resurrected": res}
        json.dump(fin, open(f"{self.dir}/final.json", "w"), indent=1)
        for i in live:
            self.c.log(f"node{i} rss={self.c.rss_kb(i)} kB")

    def cleanup(self):
        self.stop_mon = True
        if self.load and self.load.poll() is None:
            try:
                os.killpg(self.load.pid, signal.SIGKILL)
            except Exception:
                pass
            self.load.wait()
        for i in list(self.c.procs):
            try:
                self.c.stop(i, signal.SIGTERM, wait=10)
            except Exception as e:
                print("cleanup", e)
        self.c.stop_all()


# ---------------------------------------------------------------- scenarios

def base3(r):
    for i in (1, 2, 3):
        r.start(i, clients=False)
    r.c.wait_converged({1, 2, 3})
    for i in (1, 2, 3):
        r.add_clients(i)


def sc_join(r):
    """3 nodes under load; node4 (fresh) joins at 15 s; node5 joins at 40 s."""
    base3(r)
    r.start_load()
    r.at(15); r.start(4); r.c.wait_converged({1, 2, 3, 4})
    r.at(40); r.start(5); r.c.wait_converged({1, 2, 3, 4, 5})


def sc_replace_same(r):
    """SIGTERM node3 at 15 s; node3 comes back with a FRESH data dir at 25 s (same name)."""
    base3(r)
    r.start_load()
    r.at(15); r.term(3); r.c.wait_converged({1, 2})
    r.at(25); r.start(3, fresh_tag="fresh"); r.c.wait_converged({1, 2, 3})


def sc_replace_new(r):
    """SIGTERM node3 at 15 s; node4 (fresh) takes its place at 20 s; then SIGTERM node2 at 45 s, node5 at 50 s."""
    base3(r)
    r.start_load()
    r.at(15); r.term(3); r.c.wait_converged({1, 2})
    r.at(20); r.start(4); r.c.wait_converged({1, 2, 4})
    r.at(45); r.term(2); r.c.wait_converged({1, 4})
    r.at(50); r.start(5); r.c.wait_converged({1, 4, 5})


def sc_fast_restart(r):
    """kill -9 node3 at 15 s and restart it with its OLD data dir 0.5 s later (faster than
    failure detection: foca replaces its old life, `Output::Replaced`); then kill -9 node2
    at 35 s and restart it 0.5 s later, while node3 may still be proving its pushes."""
    base3(r)
    r.start_load()
    r.at(15); r.term(3, signal.SIGKILL)
    r.at(15.5); r.start(3); r.c.wait_converged({1, 2, 3})
    r.at(35); r.term(2, signal.SIGKILL)
    r.at(35.5); r.start(2); r.c.wait_converged({1, 2, 3})


def sc_restart_old(r):
    """SIGTERM node2 at 15 s; others write its keys for 15 s; node2 restarts with its OLD data dir at 30 s.
    Then kill -9 node3 at 50 s and restart it with its old data dir at 58 s."""
    base3(r)
    r.start_load()
    r.at(15); r.term(2); r.c.wait_converged({1, 3})
    r.at(30); r.start(2); r.c.wait_converged({1, 2, 3})
    r.at(50); r.term(3, signal.SIGKILL)
    r.at(58); r.start(3); r.c.wait_converged({1, 2, 3})


def sc_quick(r):
    """joins and leaves in quick succession: +4, -1, +5, -2, +1(old dir), -4 ... 2 s apart.
    LEAVE_SIG=KILL: the leaves are kill -9, not SIGTERM."""
    sig = signal.SIGKILL if os.environ.get("LEAVE_SIG") == "KILL" else signal.SIGTERM
    base3(r)
    r.start_load()
    r.at(12); r.start(4)
    r.at(14); r.term(1, sig)
    r.at(16); r.start(5)
    r.at(18); r.term(2, sig)
    r.c.wait_converged({3, 4, 5})
    r.at(30); r.start(1)
    r.at(32); r.term(4, sig)
    r.at(34); r.start(2, fresh_tag="fresh")
    r.c.wait_converged({1, 2, 3, 5})


def sc_join_stopped(r):
    """SIGSTOP node2 at 15 s; node4 joins at 17 s while node2 is stopped; SIGCONT node2 at 21 s
    (before it is declared down); then SIGSTOP node3 at 40 s, node5 joins at 42 s, SIGCONT node3 at 52 s
    (after it was declared down)."""
    base3(r)
    r.start_load()
    r.at(15); r.drop_clients(2); r.c.sig(2, signal.SIGSTOP)
    r.at(17); r.start(4)
    r.at(21); r.c.sig(2, signal.SIGCONT); r.add_clients(2)
    r.c.wait_converged({1, 2, 3, 4})
    r.at(40); r.drop_clients(3); r.c.sig(3, signal.SIGSTOP)
    r.at(42); r.start(5)
    r.at(52); r.c.sig(3, signal.SIGCONT); r.add_clients(3)
    r.c.wait_converged({1, 2, 3, 4, 5})


def sc_join_leave(r):
    """node4 (fresh) joins at 15 s; node1 leaves (SIGTERM) GAP s later (env GAP, default 2)."""
    gap = float(os.environ.get("GAP", 2))
    base3(r)
    r.start_load()
    r.at(15); r.start(4)
    r.at(15 + gap); r.term(1)
    r.c.wait_converged({2, 3, 4})


def sc_leave_join(r):
    """node1 leaves (SIGTERM) at 15 s; node4 (fresh) joins GAP s later (env GAP, default 2)."""
    gap = float(os.environ.get("GAP", 2))
    base3(r)
    r.start_load()
    r.at(15); r.term(1)
    r.at(15 + gap); r.start(4)
    r.c.wait_converged({2, 3, 4})


def sc_join_then_leave_late(r):
    """preload PRE (40000) keys; node4 joins at 15 s; node1 leaves (SIGTERM, or SIG env) at 50 s, past the 30 s hand-off window."""
    n = int(os.environ.get("PRE", 40000))
    sig = getattr(signal, os.environ.get("SIG", "SIGTERM"))
    base3(r)
    preload(r, n, resp_port(1))
    r.start_load()
    r.at(15); r.start(4); r.c.wait_converged({1, 2, 3, 4})
    r.at(50); r.term(1, sig)
    r.c.wait_converged({2, 3, 4})


def sc_pause_then_kill(r):
    """preload PRE (20000) keys; SIGSTOP node2 at 15 s, SIGCONT PAUSE (8) s later (declared down meanwhile; JOIN=1: node4 joins at 17 s
    while node2 is stopped); kill -9 node3 at 45 s unless KILL=0. Nothing may be lost."""
    n = int(os.environ.get("PRE", 20000))
    join = os.environ.get("JOIN") == "1"
    base3(r)
    preload(r, n, resp_port(1))
    r.start_load()
    r.at(15); r.drop_clients(2); r.c.sig(2, signal.SIGSTOP)
    if join:
        r.at(17); r.start(4)
    r.at(15 + float(os.environ.get("PAUSE", 8))); r.c.sig(2, signal.SIGCONT); r.add_clients(2)
    live = {1, 2, 3, 4} if join else {1, 2, 3}
    r.c.wait_converged(live)
    if os.environ.get("KILL", "1") == "1":
        r.at(45); r.term(3, signal.SIGKILL)
        r.c.wait_converged(live - {3})


SCEN = {k[3:]: v for k, v in globals().items() if k.startswith("sc_")}


def _term(sig, frm):
    raise SystemExit(f"signal {sig}")


def main():
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)
    name = sys.argv[1]
    tag = sys.argv[2] if len(sys.argv) > 2 else time.strftime("%H%M%S")
    es = None
    if "--es" in sys.argv:
        es = int(sys.argv[sys.argv.index("--es") + 1])
    r = Run(name, tag, es)
    open(f"{r.dir}/scenario.txt", "w").write(f"{name}: {SCEN[name].__doc__}\nexpected_size={es}\nLOAD_S={LOAD_S}\n")
    mon = threading.Thread(target=r.monitor, daemon=True)
    mon.start()
    try:
        SCEN[name](r)
        r.wait_load()
        r.final_check()
    finally:
        r.cleanup()
    v = analyze.analyze(r.dir)
    print(f"RESULT {name}-{tag}: {len(v)} violation lines")


if __name__ == "__main__":
    main()
