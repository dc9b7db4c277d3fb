"""Client-side caching benchmark (scripts/bench-tracking.sh runs it against a Strata
cluster and redis-server side by side).

  throughput PORT WRITE_PORT SECONDS CACHE [WRITES]
                                             Zipf(1.0) over 10,000 keys, 95 % GET / 5 % SET
                                             (WRITES: the share of SETs, default 0.05),
                                             one redis-py client (RESP3), with or without
                                             cache_config; prints reads/s and read p50/p99
  delay PORT WRITE_PORT N                    a tracking client on PORT reads a key, another
                                             client SETs it on WRITE_PORT: time from the SET
                                             being sent to the invalidate push arriving
"""
import json, random, socket, sys, threading, time

import redis
from redis.cache import CacheConfig

KEYS, VALUE = 10_000, b"v" * 100


def zipf_sequence(n, writes, seed=7):
    rnd = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(KEYS)]
    keys = [f"bench:{i}" for i in range(KEYS)]
    return rnd.choices(keys, weights=weights, k=n), [rnd.random() < writes for _ in range(n)]


def throughput(port, wport, seconds, cache, writes):
    w = redis.Redis(port=wport)
    p = w.pipeline(transaction=False)
    for i in range(KEYS):
        p.set(f"bench:{i}", VALUE)
    p.execute()
    # 1,000 entries: redis-py drops an invalidated key by scanning its whole cache, so a
    # larger one costs the client milliseconds per notice.
    kw = {"cache_config": CacheConfig(max_size=1000)} if cache else {}
    r = redis.Redis(port=port, protocol=3, **kw)
    keys, writes = zipf_sequence(2_000_000, writes)
    lat, i, reads = [], 0, 0
    end = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < end:
        k = keys[i % len(keys)]
        if writes[i % len(keys)]:
            r.set(k, VALUE)
        else:
            t0 = time.perf_counter_ns()
            v = r.get(k)
            lat.append(time.perf_counter_ns() - t0)
            assert v is not None
            reads += 1
        i += 1
    took = time.perf_counter() - started
    lat.sort()
    print(json.dumps({
        "reads_per_s": round(reads / took),
        "p50_us": round(lat[len(lat) // 2] / 1000, 1),
        "p99_us": round(lat[len(lat) * 99 // 100] / 1000, 1),
    }))


def delay(port, wport, n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")

    def send(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)

    def frame():
        line = f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b"-", b":", b"_"):
            return rest
        if t == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2]
        if t in (b"*", b">", b"%"):
            items = [frame() for _ in range(int(rest) * (2 if t == b"%" else 1))]
            return (t, items)
        raise ValueError(line)

    replies, pushes = [], {}
    got = threading.Condition()

    def reader():
        while True:
            fr = frame()
            now = time.perf_counter_ns()
            with got:
                if isinstance(fr, tuple) and fr[0] == b">":
                    for k in fr[1][1][1] if isinstance(fr[1][1], tuple) else []:
                        pushes[k] = now
                else:
                    replies.append(fr)
                got.notify_all()

    threading.Thread(target=reader, daemon=True).start()

    def call(*args):
        with got:
            before = len(replies)
        send(*args)
        with got:
            got.wait_for(lambda: len(replies) > before, timeout=5)
            return replies[-1]

    call("HELLO", "3")
    call("CLIENT", "TRACKING", "on")
    w = redis.Redis(port=wport)
    delays = []
    for i in range(n):
        k = f"delay:{i}".encode()
        w.set(k, "a")
        call("GET", k)
        t0 = time.perf_counter_ns()
        w.set(k, "b")
        with got:
            if not got.wait_for(lambda: k in pushes, timeout=5):
                raise SystemExit(f"no invalidation for {k!r} within 5 s")
            delays.append(pushes[k] - t0)
    delays.sort()
    print(json.dumps({
        "p50_us": round(delays[n // 2] / 1000, 1),
        "p99_us": round(delays[n * 99 // 100] / 1000, 1),
    }))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "throughput":
        writes = float(sys.argv[6]) if len(sys.argv) > 6 else 0.05
        throughput(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1", writes)
    else:
        delay(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
