"""Load clients for the membership review: raw-socket RESP (no client-side retries).

Usage (normally started by scenario.py):
  python3 load.py OUTDIR PORTS_FILE DURATION_S
Spawns worker processes; each writes OUTDIR/w<kind><n>.jsonl.
"""
import json, os, random, socket, sys, time, multiprocessing as mp

TIMEOUT = 13.0  # > failover_wait_ms (10 s) so a node's own wait is not cut short
N_CTR = 5
N_LOCK = 3
RELEASE = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end"


class RespError(Exception):
    pass


class NotSent(Exception):
    """Connect failed: the command never left."""


class Indeterminate(Exception):
    """Sent, then the connection broke or timed out."""


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.port = port
        try:
            self.s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError as e:
            raise NotSent(f"connect {port}: {e}")
        self.s.settimeout(TIMEOUT)
        self.buf = b""

    def close(self):
        try:
            self.s.close()
        except Exception:
            pass

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise ConnectionError("eof")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v.decode(errors="replace")
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        if t == b"_":
            return None
        raise ConnectionError(f"bad reply {line!r}")

    def cmd(self, *args):
        try:
            self.s.sendall(enc(*args))
        except OSError as e:
            # may have partially left; treat as indeterminate
            raise Indeterminate(f"send: {e}")
        try:
            r = self._read()
        except (OSError, ConnectionError, ValueError) as e:
            raise Indeterminate(f"recv: {type(e).__name__} {e}")
        return r


class Pool:
    def __init__(self, ports_file):
        self.ports_file = ports_file
        self.ports = []
        self.loaded = 0
        self.conns = {}

    def refresh(self):
        if time.time() - self.loaded > 0.1:
            try:
                self.ports = json.load(open(self.ports_file))
            except Exception:
                pass
            self.loaded = time.time()
        for p in list(self.conns):
            if p not in self.ports:
                self.conns.pop(p).close()

    def call(self, *args, port=None):
        """Returns (port, kind, value) with kind in ok|err|notsent|indet."""
        self.refresh()
        if port is None:
            if not self.ports:
                return None, "notsent", "no live ports"
            port = random.choice(self.ports)
        c = self.conns.get(port)
        try:
            if c is None:
                c = Conn(port)
                self.conns[port] = c
            r = c.cmd(*args)
        except NotSent as e:
            return port, "notsent", str(e)
        except Indeterminate as e:
            self.conns.pop(port, None)
            c.close()
            return port, "indet", str(e)
        if isinstance(r, RespError):
            return port, "err", str(r)
        return port, "ok", r


def classify_err(msg):
    if msg.startswith("TRYAGAIN") or msg.startswith("CLUSTERDOWN"):
        return "fail"
    if "may or may not" in msg:
        return "indet"
    return "other"


def counter_worker(wid, outdir, ports_file, dur):
    random.seed(os.getpid() ^ int(time.time() * 1e6))
    pool = Pool(ports_file)
    f = open(f"{outdir}/ctr{wid}.jsonl", "w")
    end = time.time() + dur
    while time.time() < end:
        key = f"ctr:{random.randrange(N_CTR)}"
        ts = time.time()
        port, kind, v = pool.call("INCR", key)
        te = time.time()
        rec = {"op": "incr", "key": key, "port": port, "ts": ts, "te": te, "kind": kind, "v": v}
        if kind == "err":
            rec["cls"] = classify_err(v)
        f.write(json.dumps(rec) + "\n")
        if kind in ("notsent",):
            time.sleep(0.05)
    f.close()


def lock_worker(wid, outdir, ports_file, dur):
    random.seed(os.getpid() ^ int(time.time() * 1e6))
    pool = Pool(ports_file)
    f = open(f"{outdir}/lock{wid}.jsonl", "w")
    end = time.time() + dur
    n = 0
    while time.time() < end:
        key = f"lock:{random.randrange(N_LOCK)}"
        n += 1
        token = f"w{wid}-{os.getpid()}-{n}"
        ts = time.time()
        port, kind, v = pool.call("SET", key, token, "NX", "PX", 2000)
        te = time.time()
        rec = {"op": "acq", "key": key, "tok": token, "port": port, "ts": ts, "te": te, "kind": kind, "v": v}
        if kind == "err":
            rec["cls"] = classify_err(v)
        got = kind == "ok" and v == "OK"
        maybe = kind == "indet" or (kind == "err" and rec.get("cls") != "fail")
        if got:
            time.sleep(0.05)
        if got or maybe:
            rs = time.time()
            # release through a (possibly different) random node
            rport, rkind, rv = pool.call("EVAL", RELEASE, 1, key, token)
            rec.update({"rs": rs, "re": time.time(), "rport": rport, "rkind": rkind, "rv": rv})
        f.write(json.dumps(rec) + "\n")
        if not got:
            time.sleep(random.uniform(0.005, 0.03))
    f.close()


def kv_worker(wid, outdir, ports_file, dur):
    random.seed(os.getpid() ^ int(time.time() * 1e6))
    pool = Pool(ports_file)
    f = open(f"{outdir}/kv{wid}.jsonl", "w")
    end = time.time() + dur
    n = 0
    acked = []      # (key, val, t_ack)
    deleted = []    # (key, t_ack)
    while time.time() < end:
        r = random.random()
        if r < 0.55 or not acked:
            n += 1
            key = f"kv:{wid}:{n}"
            val = f"v-{wid}-{n}-{random.getrandbits(32):08x}"
            ts = time.time()
            port, kind, v = pool.call("SET", key, val)
            te = time.time()
            rec = {"op": "set", "key": key, "val": val, "port": port, "ts": ts, "te": te, "kind": kind, "v": v}
            if kind == "err":
                rec["cls"] = classify_err(v)
            if kind == "ok" and v == "OK":
                acked.append((key, val, te))
        elif r < 0.70:
            i = random.randrange(len(acked))
            key, val, t = acked.pop(i)
            ts = time.time()
            port, kind, v = pool.call("DEL", key)
            te = time.time()
            rec = {"op": "del", "key": key, "val": val, "port": port, "ts": ts, "te": te, "kind": kind, "v": v}
            if kind == "err":
                rec["cls"] = classify_err(v)
            if kind == "ok":
                deleted.append((key, val, te))
        else:
            # read back something settled (acked >= 3 s ago): a kept write or a deleted key
            old_a = [x for x in acked if time.time() - x[2] > 3]
            old_d = [x for x in deleted if time.time() - x[2] > 3]
            if old_d and (random.random() < 0.4 or not old_a):
                key, val, t = random.choice(old_d)
                want = None
            elif old_a:
                key, val, t = random.choice(old_a)
                want = val
            else:
                time.sleep(0.01)
                continue
            ts = time.time()
            port, kind, v = pool.call("GET", key)
            te = time.time()
            rec = {"op": "get", "key": key, "want": want, "val": val, "port": port, "ts": ts, "te": te,
                   "kind": kind, "v": v, "t_acked": t}
        f.write(json.dumps(rec) + "\n")
        if rec["kind"] == "notsent":
            time.sleep(0.05)
    f.close()


def main():
    outdir, ports_file, dur = sys.argv[1], sys.argv[2], float(sys.argv[3])
    n_ctr = int(os.environ.get("N_CTR_W", 4))
    n_lock = int(os.environ.get("N_LOCK_W", 4))
    n_kv = int(os.environ.get("N_KV_W", 3))
    os.makedirs(outdir, exist_ok=True)
    ps = []
    for i in range(n_ctr):
        ps.append(mp.Process(target=counter_worker, args=(i, outdir, ports_file, dur)))
    for i in range(n_lock):
        ps.append(mp.Process(target=lock_worker, args=(i, outdir, ports_file, dur)))
    for i in range(n_kv):
        ps.append(mp.Process(target=kv_worker, args=(i, outdir, ports_file, dur)))
    for p in ps:
        p.start()
    for p in ps:
        p.join(dur + 60)
        if p.is_alive():
            p.kill()


if __name__ == "__main__":
    main()
