#!/usr/bin/env bash
# dmsc twice in the peers' loop (benches/peers/harness/peers/run_all.sh, DMSC_BENCH=...): as deployed
# (shared memory between ranks of one host, label "dmsc"), then over TCP only
# (DMSC_SHM=0 DMSC_CMA=0, label "dmsc-tcp", JSON beside the first with "-tcp" before ".json"
# in the name the report reads: dmsc-tcp-wW-rN.json). Takes dmsc_allreduce.py's arguments.
#   DMSC_BENCH="bash $PWD/benches/peers/dmsc_both.sh" bash benches/peers/harness/peers/run_all.sh
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PY:-/opt/peers-venv/bin/python}"
args=("$@")
json=""
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ "${args[$i]}" == --json ]] && json="${args[$((i + 1))]}"
done
"$PY" "$HERE/dmsc_allreduce.py" "$@"; rc=$?
if [[ -n "$json" ]]; then
  tcp_json="$(dirname "$json")/$(basename "$json" | sed 's/^dmsc-/dmsc-tcp-/')"
  for ((i = 0; i < ${#args[@]}; i++)); do
    [[ "${args[$i]}" == --json ]] && args[$((i + 1))]="$tcp_json"
  done
fi
DMSC_SHM=0 DMSC_CMA=0 "$PY" "$HERE/dmsc_allreduce.py" "${args[@]}" --label dmsc-tcp || rc=$?
exit $rc
