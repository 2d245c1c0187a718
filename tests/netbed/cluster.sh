#!/usr/bin/env bash
# cluster.sh - a network-namespace bed shaped like a cluster: H hosts joined by one switch.
#
#   netns ${NAME}0 ... ${NAME}{H-1}: one "host" each, interface eth0 at 10.81.0.{i+1}/24
#   netns ${NAME}sw: the switch, a bridge br0 with one port p<i> per host
#
# Each host's link is shaped both ways with tbf (on eth0, towards the switch, and on p<i>,
# towards the host), so a host sends and receives at RATE Mbit/s of TCP goodput each way
# (tbf rate RATE*1514/1448 kbit, as netbed.sh; burst max(RATE*1ms, 64 KiB); latency 20 ms).
# RATE 0 leaves the links unshaped. Nothing is created in the root namespace, so no traffic
# can reach the host network, and IPv6 is off.
#
# `exec NAME I CMD...` runs CMD as host I: inside netns ${NAME}I, in new PID, IPC, UTS and
# mount namespaces, with a private tmpfs on /dev/shm and the host name host-I, so that no
# same-host path (shared memory, cross-memory attach) crosses between hosts. Namespaces
# share one kernel (and its boot id); the IPC and network namespaces tell hosts apart.
#
# usage: cluster.sh up NAME H RATE | down NAME H | exec NAME I CMD... | check
# Needs root, iproute2 (ip, tc, bridge support), unshare and mount.

set -euo pipefail
PROG=${0##*/}

die() { echo "$PROG: $*" >&2; exit 1; }

ip_of() { echo "10.81.0.$(($1 + 1))"; }

shape() { # ns dev rate
    local ns=$1 dev=$2 rate=$3
    [ "$rate" = 0 ] && return 0
    local kbit=$((rate * 1000 * 1514 / 1448))
    local burst=$((rate * 1000 * 1000 / 8 / 1000))
    [ "$burst" -lt 65536 ] && burst=65536
    ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "${kbit}kbit" burst "$burst" latency 20ms
}

down() { # NAME H
    local name=$1 h=$2 i
    for ((i = 0; i < h; i++)); do ip netns del "$name$i" 2>/dev/null || true; done
    ip netns del "${name}sw" 2>/dev/null || true
}

up() { # NAME H RATE
    local name=$1 h=$2 rate=$3 i
    [[ $h =~ ^[0-9]+$ && $h -ge 2 && $h -le 200 ]] || die "H=$h: give 2 to 200 hosts"
    [[ $rate =~ ^[0-9]+$ ]] || die "RATE=$rate: give Mbit/s as an integer (0: unshaped)"
    down "$name" "$h"
    trap 'down "$name" "$h"' ERR
    ip netns add "${name}sw"
    ip -n "${name}sw" link add br0 type bridge
    ip -n "${name}sw" link set br0 up
    for ((i = 0; i < h; i++)); do
        local ns=$name$i
        ip netns add "$ns"
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip link add eth0 netns "$ns" type veth peer name "p$i" netns "${name}sw"
        ip -n "${name}sw" link set "p$i" master br0
        ip -n "${name}sw" link set "p$i" up
        ip -n "$ns" addr add "$(ip_of "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        shape "$ns" eth0 "$rate"
        shape "${name}sw" "p$i" "$rate"
    done
    # Wait until every bridge port forwards (state 3) and every host link is up; with STP
    # off the bridge forwards as soon as its ports come up.
    for ((i = 0; i < h; i++)); do
        local ok=0 t
        for t in $(seq 1 50); do
            if [ "$(ip netns exec "${name}sw" cat "/sys/class/net/p$i/brport/state")" = 3 ] &&
                [ "$(ip netns exec "$name$i" cat /sys/class/net/eth0/operstate)" = up ]; then
                ok=1
                break
            fi
            sleep 0.1
        done
        [ $ok = 1 ] || die "host $i: its switch port never started forwarding"
    done
    trap - ERR
}

host_exec() { # NAME I CMD...
    local name=$1 i=$2
    shift 2
    [ $# -gt 0 ] || die "exec: no command"
    exec ip netns exec "$name$i" unshare --pid --fork --ipc --uts --mount --propagation private \
        sh -c 'mount -t tmpfs -o size=512m dmsc-shm /dev/shm && hostname "host-$0" && exec "$@"' \
        "$i" "$@"
}

check() {
    [ "$(id -u)" = 0 ] || { echo "not root"; exit 1; }
    local t
    for t in ip tc unshare mount; do
        command -v "$t" >/dev/null || { echo "'$t' is missing"; exit 1; }
    done
    local probe=dmscchk$$
    if ! ip netns add "$probe" 2>/dev/null; then echo "cannot create a network namespace"; exit 1; fi
    local ok=1
    ip -n "$probe" link add br0 type bridge 2>/dev/null || ok=0
    ip -n "$probe" link add v0 type veth peer name v1 2>/dev/null || ok=0
    [ $ok = 1 ] && { ip netns exec "$probe" tc qdisc add dev v0 root tbf rate 1000mbit burst 64k latency 20ms 2>/dev/null || ok=0; }
    ip netns del "$probe"
    [ $ok = 1 ] || { echo "no bridge, veth or tbf support in this kernel"; exit 1; }
}

case ${1:-} in
    up) [ $# = 4 ] || die "usage: up NAME H RATE"; up "$2" "$3" "$4" ;;
    down) [ $# = 3 ] || die "usage: down NAME H"; down "$2" "$3" ;;
    exec) [ $# -ge 4 ] || die "usage: exec NAME I CMD..."; host_exec "${@:2}" ;;
    ip) [ $# = 2 ] || die "usage: ip I"; ip_of "$2" ;;
    check) check ;;
    *) die "usage: up NAME H RATE | down NAME H | exec NAME I CMD... | ip I | check" ;;
esac
