#!/usr/bin/env python3
# Four PSUBSCRIBEs of 10,000 new patterns each against a server on 127.0.0.1:PORT, with a
# bystander client PINGing every 5 ms: prints each one's time and the bystander's worst
# PING (docs/benchmarks.md). scripts/bench-psubscribe.py 6380
import socket, time, sys, threading, redis
def frame(args):
    out=[b"*%d\r\n"%len(args)]
    for a in args: out.append(b"$%d\r\n%s\r\n"%(len(a),a))
    return b"".join(out)
port=int(sys.argv[1])
holders=[]
def psub(n, tag):
    s=socket.create_connection(("127.0.0.1",port)); data=frame([b"PSUBSCRIBE"]+[b"%s%d*"%(tag,i) for i in range(n)])
    t=time.time(); s.sendall(data); got=0; buf=b""
    while buf.count(b"psubscribe")<n:
        buf+=s.recv(1<<20)
    holders.append(s)
    return time.time()-t
for round in range(4):
    stop=threading.Event(); lat=[]
    def by():
        r=redis.Redis(port=port)
        while not stop.is_set():
            t=time.time(); r.ping(); lat.append(time.time()-t); time.sleep(0.005)
    th=threading.Thread(target=by); th.start(); time.sleep(0.1)
    d=psub(10000, b"r%d:"%round); time.sleep(0.05); stop.set(); th.join(); lat.sort()
    print(f"PSUBSCRIBE 10000 (held before {round*10000}): {d:.2f} s; bystander PING max {lat[-1]*1000:.1f} ms over {len(lat)}")
