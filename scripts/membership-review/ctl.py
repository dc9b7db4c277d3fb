"""Cluster control for the membership review. Ports 7700-7799 only.

node i (1..5): resp 7710+i, admin 7720+i, cluster 7730+i, gossip 7740+i, rpc 7750+i
"""
import json, os, signal, subprocess, time, urllib.request

# Where runs go, and the binary under test (a copy, so that a rebuild does not change it
# mid-run): MR_BASE and STRATA_BIN.
BASE = os.environ.get("MR_BASE", "/tmp/memberreview")
BIN = os.environ.get("STRATA_BIN", "/tmp/strata-review")
os.makedirs(BASE, exist_ok=True)
if not os.path.exists(f"{BASE}/secret"):
    open(f"{BASE}/secret", "w").write(__import__("base64").b64encode(os.urandom(24)).decode())
SECRET = open(f"{BASE}/secret").read().strip()


def resp_port(i): return 7710 + i
def admin_port(i): return 7720 + i
def cl_port(i): return 7730 + i
def gossip_port(i): return 7740 + i
def rpc_port(i): return 7750 + i


def write_config(i, data_dir, seeds=(1, 2, 3), expected_size=None, extra=""):
    cfgdir = f"{BASE}/cfg"
    os.makedirs(cfgdir, exist_ok=True)
    seeds_s = ", ".join(f'"127.0.0.1:{gossip_port(s)}"' for s in seeds)
    es = f"expected_size = {expected_size}\n" if expected_size else ""
    txt = f"""[node]
name = "node{i}"

[server]
resp_listen = "127.0.0.1:{resp_port(i)}"
admin_listen = "127.0.0.1:{admin_port(i)}"
cluster_listen = "127.0.0.1:{cl_port(i)}"

[l3]
data_dir = "{data_dir}"

[cluster]
enabled = true
gossip_listen = "127.0.0.1:{gossip_port(i)}"
rpc_listen = "127.0.0.1:{rpc_port(i)}"
seeds = [{seeds_s}]
replication_factor = 2
{es}{extra}
"""
    path = f"{cfgdir}/node{i}.toml"
    open(path, "w").write(txt)
    return path


class Cluster:
    def __init__(self, run_dir, expected_size=None, seeds=(1, 2, 3)):
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.procs = {}  # i -> Popen
        self.expected_size = expected_size
        self.seeds = seeds
        self.events = []
        self.t0 = time.time()
        self.pidfile = open(f"{run_dir}/pids.txt", "a")

    def log(self, msg):
        t = time.time() - self.t0
        line = f"[{t:8.3f}] {msg}"
        print(line, flush=True)
        self.events.append((time.time(), msg))
        with open(f"{self.run_dir}/timeline.txt", "a") as f:
            f.write(f"{time.time():.3f} {line}\n")

    def data_dir(self, i, fresh_tag=None):
        if fresh_tag:
            return f"{self.run_dir}/data{i}-{fresh_tag}"
        return f"{self.run_dir}/data{i}"

    def start(self, i, fresh_tag=None, data_dir=None):
        dd = data_dir or self.data_dir(i, fresh_tag)
        cfg = write_config(i, dd, seeds=self.seeds, expected_size=self.expected_size)
        # copy config into run dir for reproduction
        open(f"{self.run_dir}/node{i}.toml", "w").write(open(cfg).read())
        env = dict(os.environ, STRATA__CLUSTER__SECRET=SECRET, RUST_LOG=os.environ.get("MR_RUST_LOG", "info"))
        logf = open(f"{self.run_dir}/node{i}.log", "a")
        logf.write(f"\n===== start {time.time():.3f} data_dir={dd}\n")
        logf.flush()
        p = subprocess.Popen([BIN, "serve", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.procs[i] = p
        self.pidfile.write(f"{p.pid}\n"); self.pidfile.flush()
        self.log(f"start node{i} pid={p.pid} data_dir={dd}")
        return p

    def sig(self, i, sig):
        p = self.procs.get(i)
        if p and p.poll() is None:
            os.kill(p.pid, sig)
            self.log(f"signal {signal.Signals(sig).name} node{i} pid={p.pid}")

    def stop(self, i, sig=signal.SIGTERM, wait=15):
        p = self.procs.get(i)
        if not p:
            return
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            os.kill(p.pid, sig)
            self.log(f"stop node{i} with {signal.Signals(sig).name}")
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                self.log(f"node{i} did not exit in {wait}s: SIGKILL")
        self.log(f"node{i} exited rc={p.returncode}")
        del self.procs[i]

    def stop_all(self):
        for i in list(self.procs):
            try:
                p = self.procs[i]
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(10)
            except Exception as e:
                print("stop_all", i, e)
            self.procs.pop(i, None)

    def live(self):
        return [i for i, p in self.procs.items() if p.poll() is None]

    def view(self, i):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port(i)}/cluster", timeout=2) as r:
                return json.loads(r.read())
        except Exception as e:
            return {"error": str(e)}

    def metrics(self, i):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port(i)}/metrics", timeout=2) as r:
                return r.read().decode()
        except Exception as e:
            return ""

    def rss_kb(self, i):
        p = self.procs.get(i)
        if not p:
            return None
        try:
            for line in open(f"/proc/{p.pid}/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
        except Exception:
            return None

    def summary(self, i):
        v = self.view(i)
        if "error" in v:
            return {"err": v["error"]}
        mem = sorted((m.get("name"), m.get("state")) for m in v.get("members", []))
        return {"ring_version": v.get("ring_version"), "ring_members": sorted(v.get("ring_members", []) or []),
                "members": mem}

    def converged(self, expect):
        """expect: set of node indices that should be the live ring."""
        names = sorted(f"node{i}" for i in expect)
        views = {}
        for i in expect:
            s = self.summary(i)
            views[i] = s
            if "err" in s:
                return False, views
            live = sorted(n for n, st in s["members"] if st in ("self", "alive"))
            if live != names or s["ring_members"] != names:
                return False, views
        rv = {views[i]["ring_version"] for i in expect}
        return len(rv) == 1, views

    def wait_converged(self, expect, timeout=30):
        t = time.time()
        while time.time() - t < timeout:
            ok, views = self.converged(expect)
            if ok:
                self.log(f"converged on {sorted(expect)} after {time.time()-t:.2f}s ring_version={views[list(expect)[0]]['ring_version']}")
                return True
            time.sleep(0.2)
        self.log(f"NOT converged on {sorted(expect)} after {timeout}s: {json.dumps(views)}")
        return False

    def write_live_ports(self, path, nodes=None):
        nodes = self.live() if nodes is None else nodes
        tmp = path + ".tmp"
        open(tmp, "w").write(json.dumps([resp_port(i) for i in nodes]))
        os.rename(tmp, path)
