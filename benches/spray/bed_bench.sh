#!/usr/bin/env bash
# Packet spraying on the network-namespace test bed (tests/netbed/netbed.sh): two hosts
# joined by four paths shaped to 100/200/300/400 Mbit/s.
#
#   1. each path alone (DMSC_PATHS=1 on that interface): the rate it reaches by itself;
#   2. all four paths, DMSC_SPRAY=adaptive | roundrobin | single, for send/recv and
#      all_reduce (2 ranks: busbw is the per-direction rate);
#   3. random path cuts while data streams (the netns test's cut_many, SN_CUTS cuts):
#      bit-exact data, time until a restored path carries data again, and the throughput
#      after the cut against the surviving capacity;
#   4. plain loopback, K=4 against K=1 at 64 MiB (dmsc-perf --np 2), with memory attach
#      (the default) and without (DMSC_CMA=0: every byte on the paths).
#
# Rounds are interleaved (ROUNDS, default 3) and medians reported, as this VM's figures
# drift. Needs root. Usage: bash benches/spray/bed_bench.sh [SIZE]   (default 32M)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${1:-32M}
ROUNDS=${ROUNDS:-3}
CUTS=${SN_CUTS:-30}
BED=tests/netbed/netbed.sh
NAME=dsb
PERF=target/release/dmsc-perf

bash $BED check >/dev/null || { echo "bed_bench: $(bash $BED check 2>&1)"; exit 1; }
cargo build -q --release --bin dmsc-perf
trap 'bash $BED down $NAME >/dev/null 2>&1 || true' EXIT
bash $BED up $NAME 4 100 200 300 400 >/dev/null

# Per-direction rate in Mbit/s (bytes moved per rank over the out-of-place time; for 2 ranks
# this is busbw for both send/recv and all_reduce) of a 2-rank dmsc-perf run across the
# namespaces. run2 OP ENV...
run2() {
    local op=$1; shift
    local port=$((21000 + RANDOM % 20000))
    local common=(DMSC_WORLD_SIZE=2 DMSC_STORE_ADDR=10.77.200.1:$port DMSC_CMA=0 "$@")
    local args=("$op" -b "$SIZE" -e "$SIZE" -n 4 -w 1 -c 0)
    env "${common[@]}" DMSC_RANK=0 ip netns exec ${NAME}a $PERF "${args[@]}" >/tmp/bed_r0.$$ 2>&1 &
    local p0=$!
    env "${common[@]}" DMSC_RANK=1 timeout 300 ip netns exec ${NAME}b $PERF "${args[@]}" >/tmp/bed_r1.$$ 2>&1 || true
    wait $p0 || true
    awk '/^ +[0-9]+ +[0-9]+ /{printf "%.0f\n", $1 * 8 / $6; exit}' /tmp/bed_r0.$$
}

mbit() { if [ -z "$1" ]; then echo 0; else echo "$1"; fi; }
median() { sort -n | awk '{a[NR]=$1} END{ if (NR==0) print "-"; else print a[int((NR+1)/2)] }'; }

declare -A R
for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2 3; do
        R[alone$i]+=" $(mbit "$(run2 sendrecv DMSC_PATHS=1 DMSC_SOCKET_IFNAME==sp$i)")"
    done
    for mode in adaptive roundrobin single; do
        for op in sendrecv all_reduce; do
            R[$mode$op]+=" $(mbit "$(run2 $op DMSC_PATHS=4 DMSC_SOCKET_IFNAME==sp0,sp1,sp2,sp3 DMSC_SPRAY=$mode)")"
        done
    done
    echo "round $round done" >&2
done

med() { tr ' ' '\n' <<<"${R[$1]}" | grep -v '^$' | median; }
sum=0
echo "## Paths alone (DMSC_PATHS=1 on one interface, sendrecv $SIZE, Mbit/s per direction; runs: medians of $ROUNDS)"
echo
echo "| path | shaped to | dmsc alone (runs) | median |"
echo "|---|---|---|---|"
for i in 0 1 2 3; do
    m=$(med alone$i); sum=$((sum + m))
    echo "| sp$i | $(( (i + 1) * 100 )) | ${R[alone$i]} | $m |"
done
echo
echo "Sum of the paths alone: $sum Mbit/s"
echo
echo "## All four paths (DMSC_PATHS=4), Mbit/s per direction"
echo
echo "| mode | sendrecv (runs) | median | % of sum | all_reduce busbw (runs) | median | % of sum |"
echo "|---|---|---|---|---|---|---|"
for mode in adaptive roundrobin single; do
    a=$(med ${mode}sendrecv); b=$(med ${mode}all_reduce)
    echo "| $mode | ${R[${mode}sendrecv]} | $a | $(( 100 * a / sum ))% | ${R[${mode}all_reduce]} | $b | $(( 100 * b / sum ))% |"
done
echo

if [ "$CUTS" -gt 0 ]; then
    echo "## Random cuts ($CUTS, each path in turn, blackhole or link down, 0.7-1.5 s each)"
    echo
    SN_CUTS=$CUTS cargo test -q --release --test spray_netns -- --nocapture random_path 2>&1 \
        | grep -E "cuts, every|throughput|test result|panicked" || true
    echo
fi

echo "## Loopback, 2 ranks, all_reduce 64 MiB busbw (GB/s), K=1 vs K=4, interleaved"
echo
for cma in 1 0; do
    k1=""; k4=""
    for round in $(seq 1 5); do
        for k in 1 4; do
            v=$(DMSC_CMA=$cma DMSC_PATHS=$k $PERF --np 2 all_reduce -b 64M -e 64M -n 10 -w 2 -c 0 2>&1 \
                | awk '/^ +[0-9]+ +[0-9]+ /{print $8; exit}')
            if [ $k = 1 ]; then k1+=" $v"; else k4+=" $v"; fi
        done
    done
    m1=$(tr ' ' '\n' <<<"$k1" | grep -v '^$' | median); m4=$(tr ' ' '\n' <<<"$k4" | grep -v '^$' | median)
    echo "- DMSC_CMA=$cma: K=1 [$k1 ] median $m1; K=4 [$k4 ] median $m4; K=4/K=1 = $(awk -v a="$m4" -v b="$m1" 'BEGIN{printf "%.3f", a/b}')"
done
