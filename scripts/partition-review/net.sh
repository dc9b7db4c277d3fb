#!/usr/bin/env bash
# net.sh up|down  : 3 netns sp-n1..3, veth sp-vN (root side) <-> eth0 (ns side), bridge sp-br0
set -u
up() {
  ip link add sp-br0 type bridge
  ip addr add 10.77.0.254/24 dev sp-br0
  ip link set sp-br0 up
  for i in 1 2 3; do
    ip netns add sp-n$i
    ip link add sp-v$i type veth peer name sp-p$i
    ip link set sp-p$i netns sp-n$i
    ip netns exec sp-n$i ip link set sp-p$i name eth0
    ip netns exec sp-n$i ip addr add 10.77.0.$i/24 dev eth0
    ip netns exec sp-n$i ip link set eth0 up
    ip netns exec sp-n$i ip link set lo up
    ip link set sp-v$i master sp-br0
    ip link set sp-v$i up
  done
}
down() {
  for i in 1 2 3; do ip link del sp-v$i 2>/dev/null; ip netns del sp-n$i 2>/dev/null; done
  ip link del sp-br0 2>/dev/null
  true
}
"$@"
