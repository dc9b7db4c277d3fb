#!/usr/bin/env python3
# One MSET of many keys against a server on 127.0.0.1:PORT, with a bystander client
# SETting another key every 10 ms: prints each MSET's time and the bystander's worst
# latency, then the time of one DEL naming all those keys (docs/benchmarks.md, "A large
# MSET"). Run it against a strata node and a redis-server started on the ports you give:
# scripts/bench-big-mset.py 6380 [6379 ...]
import socket
import sys
import threading
import time

import redis


def frame(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def timed(port, args):
    s = socket.create_connection(("127.0.0.1", port))
    data = frame(args)
    t = time.time()
    s.sendall(data)
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += s.recv(65536)
    s.close()
    return time.time() - t


def run(port):
    for n in [10000, 20000, 40000, 80000]:
        stop = threading.Event()
        lat = []

        def bystander():
            r = redis.Redis(port=port)
            while not stop.is_set():
                t = time.time()
                r.set("other", "1")
                lat.append(time.time() - t)
                time.sleep(0.01)

        th = threading.Thread(target=bystander)
        th.start()
        time.sleep(0.1)
        pairs = []
        for i in range(n):
            pairs += [b"m%d" % i, b"v"]
        d = timed(port, [b"MSET"] + pairs)
        stop.set()
        th.join()
        gone = timed(port, [b"DEL"] + [b"m%d" % i for i in range(n)])
        print(f"port {port}: MSET {n:6d} keys: {d:6.2f} s; "
              f"bystander SET max {max(lat) * 1000:7.1f} ms over {len(lat)} SETs; "
              f"DEL of them {gone:6.2f} s")


for p in sys.argv[1:] or ["6380"]:
    run(int(p))
