#!/usr/bin/env bash
# netbed.sh - network-namespace test bed for dmsc multipath ("packet spraying").
#
# Topology for `up NAME K R0 .. R{K-1}`:
#
#        netns ${NAME}a                              netns ${NAME}b
#   +-----------------------+                  +-----------------------+
#   | lo   127.0.0.1        |                  | lo   127.0.0.1        |
#   | mg   10.77.200.1/24 ==== veth, unshaped ==== mg   10.77.200.2/24  |
#   | sp0  10.77.0.1/24   ==== veth, tbf R0  ==== sp0  10.77.0.2/24     |
#   | sp1  10.77.1.1/24   ==== veth, tbf R1  ==== sp1  10.77.1.2/24     |
#   | ...                   |                  | ...                   |
#   | spK-1 10.77.K-1.1/24 === veth, tbf RK-1 === spK-1 10.77.K-1.2/24  |
#   +-----------------------+                  +-----------------------+
#
# * Path i is the veth pair named sp<i> in both namespaces, subnet 10.77.i.0/24.
#   Each end has a root `tbf` qdisc (egress) at Ri Mbit/s, so each direction is
#   shaped independently. Ri = 0 or "none" means unshaped (default veth qdisc).
# * Ri is the TCP *goodput* rate: the tbf token rate is Ri * 1514/1448 because
#   tbf counts L2 bytes (1514-byte frames carry 1448 bytes of TCP payload with
#   timestamps). Set NETBED_RATE_IS=wire to give tbf exactly Ri instead.
# * tbf burst = max(Ri * 1 ms, 64 KiB), latency = 20 ms (NETBED_BURST_MS,
#   NETBED_MIN_BURST_KB, NETBED_LATENCY_MS override these).
# * mg is a management link for the rendezvous store: never shaped, never cut.
# * IPv6 is disabled in both namespaces; nothing is created in the root netns
#   (veths are created directly inside the namespaces), so the addresses never
#   reach the host network. Several beds with different NAMEs can coexist.
#
# Cuts (path I, both directions):
# * cut/restore:       root qdisc of sp<I> in BOTH namespaces is replaced by
#                      `blackhole` (drops every packet silently, reports success
#                      to the stack; link state, addresses, routes untouched);
#                      restore re-installs the tbf. (clsact+matchall/gact is not
#                      used: many kernels, including the CI one, lack cls_matchall
#                      and act_gact; sch_blackhole is always built in.)
# * linkdown/linkup:   `ip link set sp<I> down/up` in ns a (ns b sees NO-CARRIER).
#                      linkup waits for carrier and re-adds address/route.
#
# Requires root, iproute2 (ip, tc) and kernel veth + tbf support. See README.md.

set -euo pipefail

PROG=${0##*/}
MG_SUBNET=200

usage() {
    cat >&2 <<EOF
usage: $PROG <command> [args]
  up NAME K RATE1 .. RATEK   create netns NAMEa/NAMEb joined by K shaped veth paths
                             sp0..sp{K-1} (10.77.i.1 in a, 10.77.i.2 in b) plus an
                             unshaped management link mg (10.77.200.1 / .2).
                             RATE in Mbit/s (goodput); 0 or none = unshaped.
                             Any earlier bed with the same NAME is removed first.
  down NAME                  delete both namespaces (ok if absent)
  cut NAME I                 silently drop all packets on path I, both directions
  restore NAME I             undo cut (path back at its rate)
  linkdown NAME I            ip link set spI down in ns a
  linkup NAME I              ip link set spI up in ns a, wait until usable
  exec NAME a|b CMD...       run CMD inside namespace NAMEa / NAMEb
  show NAME                  print links, addresses and qdiscs of both namespaces
  check                      exit 0 if this host can run the bed, else print a
                             one-line reason and exit 1
EOF
    exit 2
}

die() { echo "$PROG: $*" >&2; exit 1; }

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx -- "$1"; }

check_name() {
    [[ $1 =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "bad NAME '$1' (use [A-Za-z0-9_.-], max 40 chars)"
}

check_index() {
    [[ $1 =~ ^[0-9]+$ ]] || die "bad path index '$1'"
}

need_path() { # NAME I -> dies unless sp$I exists in both namespaces
    local n=$1 i=$2 s
    for s in a b; do
        ns_exists "$n$s" || die "namespace $n$s does not exist (run: $PROG up ...)"
        nsx "$n$s" ip link show dev "sp$i" >/dev/null 2>&1 || die "no path $i (sp$i) in $n$s"
    done
}

# tbf_args RATE -> prints the tbf parameters for a goodput rate in Mbit/s,
# or nothing if unshaped.
tbf_args() {
    local r=$1
    if [[ $r == none || $r == 0 ]]; then return 0; fi
    awk -v r="$r" -v mode="${NETBED_RATE_IS:-goodput}" \
        -v bms="${NETBED_BURST_MS:-1}" -v minkb="${NETBED_MIN_BURST_KB:-64}" \
        -v lat="${NETBED_LATENCY_MS:-20}" 'BEGIN {
        if (r !~ /^[0-9]+(\.[0-9]+)?$/ || r + 0 <= 0) exit 1
        kbit = r * 1000
        if (mode == "goodput") kbit = kbit * 1514 / 1448
        burst = kbit * 1000 / 8 * bms / 1000           # bytes in bms ms
        if (burst < minkb * 1024) burst = minkb * 1024
        printf "rate %dkbit burst %d latency %dms\n", kbit + 0.5, burst, lat
    }' || die "bad rate '$r' (Mbit/s, or 0/none)"
}

# apply_rate NS DEV: (re)install the root qdisc from the rate stored in ifalias.
apply_rate() {
    local ns=$1 dev=$2 alias rate args
    alias=$(nsx "$ns" cat "/sys/class/net/$dev/ifalias" 2>/dev/null || true)
    rate=${alias#netbed-rate=}
    [[ $alias == netbed-rate=* && -n $rate ]] || die "$ns/$dev: no netbed rate recorded"
    args=$(tbf_args "$rate")
    if [[ -n $args ]]; then
        # shellcheck disable=SC2086
        nsx "$ns" tc qdisc replace dev "$dev" root tbf $args
    else
        nsx "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
    fi
}

# wait_oper NS DEV...: wait (max ~5 s) until every DEV in NS is operationally up
# (carrier + linkwatch done), so callers never race a half-up link.
wait_oper() {
    local ns=$1 d st
    shift
    for _ in $(seq 100); do
        st=ok
        for d in "$@"; do
            [[ $(nsx "$ns" cat "/sys/class/net/$d/operstate" 2>/dev/null) == up ]] || { st=; break; }
        done
        [[ -n $st ]] && return 0
        sleep 0.05
    done
    die "$ns: $* not operationally up"
}

cmd_down() {
    [[ $# -eq 1 ]] || usage
    check_name "$1"
    local s
    for s in a b; do
        if ns_exists "$1$s"; then ip netns del "$1$s" || true; fi
    done
    # namespace teardown is asynchronous; wait until the names are gone
    for _ in $(seq 50); do
        ns_exists "$1a" || ns_exists "$1b" || return 0
        sleep 0.1
    done
    die "namespaces $1a/$1b still present"
}

cmd_up() {
    [[ $# -ge 2 ]] || usage
    local n=$1 k=$2 i s
    shift 2
    check_name "$n"
    [[ $k =~ ^[0-9]+$ && $k -ge 1 && $k -le $MG_SUBNET ]] || die "K must be 1..$MG_SUBNET"
    [[ $# -eq $k ]] || die "expected $k rates, got $#"
    local rates=("$@")
    for i in "${!rates[@]}"; do tbf_args "${rates[$i]}" >/dev/null; done

    cmd_down "$n"
    # on any failure below, leave nothing behind
    trap 'cmd_down "$n" >/dev/null 2>&1 || true' EXIT
    for s in a b; do
        ip netns add "$n$s"
        nsx "$n$s" ip link set lo up
        # IPv6 off (no DAD / RS noise on the paths)
        nsx "$n$s" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done

    # Management link first, then paths in order, so ifindex order == path order.
    # The veths are created directly inside the namespaces, so the final names
    # can be identical on both sides and nothing ever appears in the root netns.
    ip link add mg netns "${n}a" type veth peer name mg netns "${n}b"
    for s in a b; do
        local h=1; [[ $s == b ]] && h=2
        nsx "$n$s" ip addr add "10.77.$MG_SUBNET.$h/24" dev mg
        nsx "$n$s" ip link set mg up
    done
    for ((i = 0; i < k; i++)); do
        ip link add "sp$i" netns "${n}a" type veth peer name "sp$i" netns "${n}b"
        for s in a b; do
            local h=1; [[ $s == b ]] && h=2
            nsx "$n$s" ip link set "sp$i" alias "netbed-rate=${rates[$i]}"
            nsx "$n$s" ip addr add "10.77.$i.$h/24" dev "sp$i"
            apply_rate "$n$s" "sp$i"
            nsx "$n$s" ip link set "sp$i" up
        done
    done
    local devs=(mg)
    for ((i = 0; i < k; i++)); do devs+=("sp$i"); done
    for s in a b; do wait_oper "$n$s" "${devs[@]}"; done
    trap - EXIT
}

cmd_cut() {
    [[ $# -eq 2 ]] || usage
    check_name "$1"; check_index "$2"; need_path "$1" "$2"
    local s
    for s in a b; do
        nsx "$1$s" tc qdisc replace dev "sp$2" root blackhole
    done
}

cmd_restore() {
    [[ $# -eq 2 ]] || usage
    check_name "$1"; check_index "$2"; need_path "$1" "$2"
    local s
    for s in a b; do apply_rate "$1$s" "sp$2"; done
}

cmd_linkdown() {
    [[ $# -eq 2 ]] || usage
    check_name "$1"; check_index "$2"; need_path "$1" "$2"
    nsx "${1}a" ip link set "sp$2" down
}

cmd_linkup() {
    [[ $# -eq 2 ]] || usage
    check_name "$1"; check_index "$2"; need_path "$1" "$2"
    local n=$1 i=$2 s h
    nsx "${n}a" ip link set "sp$i" up
    # IPv4 addresses survive link down; re-add defensively in case something
    # flushed them, then wait for carrier on both ends and the connected routes.
    for s in a b; do
        h=1; [[ $s == b ]] && h=2
        nsx "$n$s" ip addr replace "10.77.$i.$h/24" dev "sp$i"
    done
    wait_oper "${n}a" "sp$i"
    wait_oper "${n}b" "sp$i"
    for _ in $(seq 100); do
        if nsx "${n}a" ip route get "10.77.$i.2" 2>/dev/null | grep -q "dev sp$i" &&
           nsx "${n}b" ip route get "10.77.$i.1" 2>/dev/null | grep -q "dev sp$i"; then
            return 0
        fi
        sleep 0.05
    done
    die "sp$i did not come back up"
}

cmd_exec() {
    [[ $# -ge 3 ]] || usage
    check_name "$1"
    [[ $2 == a || $2 == b ]] || die "side must be a or b"
    local ns=$1$2
    shift 2
    exec ip netns exec "$ns" "$@"
}

cmd_show() {
    [[ $# -eq 1 ]] || usage
    check_name "$1"
    local s
    for s in a b; do
        echo "=== $1$s"
        nsx "$1$s" ip -br addr
        nsx "$1$s" tc qdisc show
    done
}

cmd_check() {
    [[ $# -eq 0 ]] || usage
    local ns="netbedchk$$" why=""
    if [[ $(id -u) -ne 0 ]]; then echo "netbed: not root"; exit 1; fi
    command -v ip >/dev/null || { echo "netbed: ip (iproute2) not found"; exit 1; }
    command -v tc >/dev/null || { echo "netbed: tc (iproute2) not found"; exit 1; }
    if ! ip netns add "$ns" >/dev/null 2>&1; then
        echo "netbed: cannot create network namespaces"; exit 1
    fi
    if ! ip link add c0 netns "$ns" type veth peer name c1 netns "$ns" >/dev/null 2>&1; then
        why="cannot create veth pairs"
    elif ! nsx "$ns" tc qdisc add dev c0 root tbf rate 10mbit burst 32kb latency 20ms >/dev/null 2>&1; then
        why="tc tbf qdisc not available"
    elif ! nsx "$ns" tc qdisc replace dev c0 root blackhole >/dev/null 2>&1; then
        why="tc blackhole qdisc not available"
    fi
    ip netns del "$ns" >/dev/null 2>&1 || true
    if [[ -n $why ]]; then echo "netbed: $why"; exit 1; fi
    exit 0
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    cut) cmd_cut "$@" ;;
    restore) cmd_restore "$@" ;;
    linkdown) cmd_linkdown "$@" ;;
    linkup) cmd_linkup "$@" ;;
    exec) cmd_exec "$@" ;;
    show) cmd_show "$@" ;;
    check) cmd_check "$@" ;;
    -h | --help | help) usage ;;
    *) echo "$PROG: unknown command '$cmd'" >&2; usage ;;
esac
