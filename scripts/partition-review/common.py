import json, os, subprocess, threading, time, urllib.request
import redis
from redis.retry import Retry
from redis.backoff import NoBackoff

D = os.path.dirname(os.path.abspath(__file__))
IPS = {1: "10.77.0.1", 2: "10.77.0.2", 3: "10.77.0.3"}
T0 = time.time()


def now():
    return time.time() - T0


def log(*a):
    print(f"[{now():7.2f}]", *a, flush=True)


def cli(n, timeout=2.0):
    # no client-side retries: an error is reported as is
    return redis.Redis(host=IPS[n], port=6379, socket_timeout=timeout, socket_connect_timeout=1.0,
                       retry=Retry(NoBackoff(), 0), retry_on_timeout=False)


def part(*args):
    subprocess.run([f"{D}/part.sh", *map(str, args)], check=False)


def admin(n, path, timeout=1.0):
    try:
        with urllib.request.urlopen(f"http://{IPS[n]}:9380{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:
        return None, str(e).encode()


def view(n):
    st, body = admin(n, "/cluster")
    if st != 200:
        return None
    d = json.loads(body)
    return {m["name"]: (m["state"], m.get("generation")) for m in d["members"]}, d.get("ring_version"), d.get("in_sync")


def health(n):
    return admin(n, "/health")[0]


def agreed():
    """every node: health 200, 3 members self/alive, same ring version, in_sync"""
    rings = set()
    for n in (1, 2, 3):
        v = view(n)
        if v is None or health(n) != 200:
            return False
        mem, ring, ins = v
        if sum(1 for s, _ in mem.values() if s in ("self", "alive")) != 3 or not ins:
            return False
        rings.add(ring)
    return len(rings) == 1


def wait_agreed(t0, limit=60):
    while time.time() - t0 < limit:
        if agreed():
            return time.time() - t0
        time.sleep(0.1)
    return None


def slot_owners():
    """slot -> [primary ip, replica ip...] from CLUSTER SLOTS on node 2"""
    out = {}
    for r in cli(2).execute_command("CLUSTER", "SLOTS"):
        a, b = r[0], r[1]
        ips = [x[0].decode() if isinstance(x[0], bytes) else x[0] for x in r[2:]]
        for s in range(a, b + 1):
            out[s] = ips
    return out


def keyslot(k):
    return cli(2).execute_command("CLUSTER", "KEYSLOT", k)


def keys_owned(prefix, primary, replica=None, count=1, owners=None):
    owners = owners or slot_owners()
    res, i = [], 0
    while len(res) < count:
        k = f"{prefix}{i}"
        o = owners[keyslot(k)]
        if o[0] == IPS[primary] and (replica is None or o[1] == IPS[replica]):
            res.append(k)
        i += 1
    return res


def gens():
    """generation of each member as each node sees it"""
    out = {}
    for n in (1, 2, 3):
        v = view(n)
        out[n] = v[0] if v else None
    return out


def classify(e):
    s = str(e)
    if "may or may not" in s:
        return "indet"
    if "TRYAGAIN" in s or "CLUSTERDOWN" in s or "not applied" in s or "nothing was applied" in s \
            or type(e).__name__ in ("TryAgainError", "ClusterDownError"):
        return "refused"
    return "indet"
