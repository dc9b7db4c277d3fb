#!/usr/bin/env bash
# Partition control without netem/iptables: htb on each root-side veth sp-vN (its egress = packets INTO node N)
# with a class whose leaf is pfifo limit 0 (drops everything). u32 filters on src IP steer packets into it.
#   part.sh init            install qdiscs
#   part.sh cut A B         drop packets from node A to node B (one way)   (A,B in 1..3, or c = client 10.77.0.254)
#   part.sh isolate N       drop all node<->node traffic of N both ways (clients still reach N)
#   part.sh isolate_all N   also cut clients (10.77.0.254) from N both ways
#   part.sh heal            remove all filters
#   part.sh fini            remove qdiscs
set -u
ipof() { [ "$1" = c ] && echo 10.77.0.254 || echo 10.77.0.$1; }
init() { for i in 1 2 3; do
  tc qdisc replace dev sp-v$i root handle 1: htb default 10 r2q 100000
  tc class replace dev sp-v$i parent 1: classid 1:10 htb rate 10gbit
  tc class replace dev sp-v$i parent 1: classid 1:20 htb rate 10gbit
  tc qdisc replace dev sp-v$i parent 1:20 handle 20: pfifo limit 0
done 2>/dev/null; }
# packets to client (c) leave via sp-br0's own stack, not a veth egress: for B=c, drop on node A's veth? no -
# client-bound packets from node A go A->sp-vA(ingress)->br0 local. Handle B=c by filtering on br0 egress is not
# possible here, so for isolate_all we also drop client->node (that kills TCP both ways anyway).
cut() { local a=$1 b=$2; [ "$b" = c ] && { echo "cut X c unsupported" >&2; return 1; }
  tc filter add dev sp-v$b parent 1: protocol ip prio 1 u32 match ip src "$(ipof "$a")"/32 flowid 1:20; }
isolate() { local n=$1; for o in 1 2 3; do [ "$o" = "$n" ] && continue; cut "$o" "$n"; cut "$n" "$o"; done; }
isolate_all() { isolate "$1"; cut c "$1"; }
heal() { for i in 1 2 3; do tc filter del dev sp-v$i parent 1: 2>/dev/null; done; true; }
fini() { for i in 1 2 3; do tc qdisc del dev sp-v$i root 2>/dev/null; done; true; }
"$@"
