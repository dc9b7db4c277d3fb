#!/usr/bin/env bash
# nodes.sh start|stop|status   (run dir $PARTITION_RUN/run, default /tmp/strata-partition-review/run)
set -u
D=$(cd "$(dirname "$0")" && pwd); R=${PARTITION_RUN:-/tmp/strata-partition-review}/run; BIN=${STRATA_BIN:-$D/../../target/release/strata}
export STRATA__CLUSTER__SECRET="review-part-secret-0123456789abcdef"
start() { mkdir -p $R; for i in 1 2 3; do
  ip netns exec sp-n$i "$BIN" serve --config $D/n$i.toml >>$R/node$i.log 2>&1 &
  echo $! > $R/node$i.pid; done
  for t in $(seq 1 150); do ok=0
    for i in 1 2 3; do c=$(curl -s -m1 http://10.77.0.$i:9380/cluster | grep -o '"state":"\(self\|alive\)"' | wc -l); [ "$c" = 3 ] && ok=$((ok+1)); done
    [ $ok = 3 ] && { echo "cluster up after $t polls"; return 0; }; sleep 0.2; done; echo "not converged"; return 1; }
stop() { for i in 1 2 3; do [ -f $R/node$i.pid ] || continue; p=$(cat $R/node$i.pid)
  kill -TERM $p 2>/dev/null; for t in $(seq 1 100); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
  kill -0 $p 2>/dev/null && kill -KILL $p; rm -f $R/node$i.pid; done; true; }
status() { for i in 1 2 3; do echo "node$i: $(curl -s -m1 -o /dev/null -w '%{http_code}' http://10.77.0.$i:9380/health) $(curl -s -m1 http://10.77.0.$i:9380/cluster | python3 -c 'import json,sys; d=json.load(sys.stdin); print([(m["name"],m["state"],m.get("generation")) for m in d["members"]], d.get("ring_version"), d.get("in_sync"))' 2>&1)"; done; }
"$@"
