#!/usr/bin/env bash
# hier_vs_ring.sh - all_reduce across hosts on the namespace cluster bed: the planner's
# choice against the flat ring (DMSC_ALGO=ring), in interleaved runs.
#
# Builds a bed of H hosts (tests/netbed/cluster.sh, links shaped to RATE Mbit/s), starts
# `dmscrun --nnodes H --node-rank i --nproc-per-node G` once per host, and runs dmsc-perf
# all_reduce at SIZE, ROUNDS times each way, alternating. Prints, per run, the algorithm the
# planner logged, the time and the bus bandwidth (out of place, in place) as node 0's
# dmsc-perf reports them, then the medians and the alpha-beta figures of the bed.
#
# usage: benches/cluster/hier_vs_ring.sh [H G RATE SIZE ROUNDS]   (default 3 3 1000 64M 3)
# Needs root (network namespaces) and release binaries (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
H=${1:-3} G=${2:-3} RATE=${3:-1000} SIZE=${4:-64M} ROUNDS=${5:-3}
BED=tests/netbed/cluster.sh
NAME=dmcb
BIN=$PWD/target/release
for b in dmscrun dmsc-perf; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: run cargo build --release first" >&2; exit 1; }
done
bash "$BED" check
LOGS=$(mktemp -d)
trap 'bash "$BED" down "$NAME" "$H"; [ -n "${KEEP_LOGS:-}" ] || rm -rf "$LOGS"' EXIT
bash "$BED" up "$NAME" "$H" "$RATE"
port=29600

run() { # label algo(empty: default)
    local label=$1 algo=$2 i pids=()
    port=$((port + 1))
    for ((i = 0; i < H; i++)); do
        env ${algo:+DMSC_ALGO=$algo} DMSC_SECRET=cluster-bench DMSC_DEBUG=INFO \
            DMSC_DEBUG_SUBSYS=COLL bash "$BED" exec "$NAME" "$i" "$BIN/dmscrun" \
            --nnodes "$H" --node-rank "$i" --master-addr "$(bash "$BED" ip 0)" \
            --master-port "$port" --nproc-per-node "$G" \
            "$BIN/dmsc-perf" all_reduce -b "$SIZE" -e "$SIZE" -n 4 -w 1 \
            >"$LOGS/$label.$i" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=$?; done
    [ "$rc" = 0 ] || { echo "run $label failed (rc $rc):" >&2; tail -20 "$LOGS/$label".* >&2; exit 1; }
    local chosen row
    chosen=$(grep -o 'all_reduce(count=[^)]*) planned with [a-z]*' "$LOGS/$label.0" | head -1 |
        awk '{print $NF}')
    # dmsc-perf's data row: size count type redop root time algbw busbw #wrong (twice).
    # busbw is recomputed from the times with more digits: bytes/time * 2(N-1)/N.
    row=$(sed 's/^\[[^]]*\] *//' "$LOGS/$label.0" | grep -E '^ *[0-9]+ +[0-9]+ +float' | tail -1)
    [ -n "$row" ] || { echo "run $label: no result row" >&2; exit 1; }
    echo "$row" | awk -v l="$label" -v a="${algo:-default}" -v c="$chosen" -v n=$((H * G)) '{
        f = 2 * (n - 1) / n
        printf "%s %s chosen=%s oop_ms=%.1f oop_busbw=%.4f ip_ms=%.1f ip_busbw=%.4f wrong=%d\n",
            l, a, c, $6 / 1e3, $1 / ($6 * 1e3) * f, $10 / 1e3, $1 / ($10 * 1e3) * f, $9 + $13 }'
}

echo "# all_reduce $SIZE on $H hosts x $G ranks, links $RATE Mbit/s, $ROUNDS interleaved rounds"
for ((r = 1; r <= ROUNDS; r++)); do
    run "default#$r" ""
    run "ring#$r" ring
done | tee "$LOGS/summary"
awk '
    { split($0, f, " "); k = f[2]; for (i = 4; i < NF; i++) { split($i, kv, "="); v[k, kv[1], ++n[k, kv[1]]] = kv[2] } keys[k] = 1 }
    END {
        for (k in keys) {
            line = "median " k ":"
            split("oop_ms oop_busbw ip_ms ip_busbw", names, " ")
            for (j = 1; j <= 4; j++) {
                c = n[k, names[j]]; delete a
                for (i = 1; i <= c; i++) a[i] = v[k, names[j], i] + 0
                for (x = 2; x <= c; x++) for (y = x; y > 1 && a[y - 1] > a[y]; y--) { t = a[y]; a[y] = a[y - 1]; a[y - 1] = t }
                med = (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
                line = line " " names[j] "=" med
                m[k, names[j]] = med
            }
            print line
        }
        if (("default", "oop_ms") in m && ("ring", "oop_ms") in m)
            printf "ratio default/ring busbw (medians): out-of-place %.3f, in-place %.3f\n",
                m["default", "oop_busbw"] / m["ring", "oop_busbw"],
                m["default", "ip_busbw"] / m["ring", "ip_busbw"]
    }' "$LOGS/summary"
if [ -x "$BIN/dmsc-sim" ] && [ "$RATE" != 0 ]; then
    "$BIN/dmsc-sim" --hosts "$H" --ranks-per-host "$G" --inter "30,$(awk "BEGIN{print $RATE/8000}")" \
        -b "$SIZE" -e "$SIZE" | sed 's/^/sim: /'
fi
