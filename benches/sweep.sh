#!/usr/bin/env bash
# Correctness sweep of dmsc-perf (issue acceptance): every OP on 1, 2, 3, 4, 5 and 8 local
# ranks over 8 B .. 16 MiB with checking on, and all_reduce over every type and operator.
# Prints one line per run and exits non-zero if any run reports a wrong element or fails.
#   bash benches/sweep.sh            (NPS="2 3" OPS="all_reduce" to narrow it)
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin dmsc-perf
PERF=target/release/dmsc-perf
NPS="${NPS:-1 2 3 4 5 8}"
OPS="${OPS:-all_reduce all_gather reduce_scatter broadcast reduce all_to_all sendrecv all_to_allv gather scatter}"
MAXB="${MAXB:-16M}"
fail=0
run() {
  local out rc wrong
  out=$(timeout 600 "$PERF" "$@" 2>&1); rc=$?
  wrong=$(awk '/^ *[0-9]+ /{for(i=1;i<=NF;i++) if ($i ~ /^[0-9]+$/ && (i==9 || i==13)) s+=$i} END{print s+0}' <<<"$out")
  if [[ $rc -ne 0 || "$out" != *"Out of bounds values : 0 OK"* ]]; then
    echo "FAIL rc=$rc: dmsc-perf $*"; echo "$out" | tail -20; fail=1
  else
    echo "ok   dmsc-perf $*  (#wrong 0)"
  fi
}
for np in $NPS; do
  for op in $OPS; do
    run --np "$np" "$op" -b 8 -e "$MAXB" -f 4 -c 1 -n 3 -w 1
  done
  run --np "$np" all_reduce -b 8 -e 1M -f 8 -c 1 -n 2 -w 1 -d all -o all
done
exit $fail
