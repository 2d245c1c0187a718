#!/usr/bin/env bash
# The comparison with Gloo and Open MPI, from a fresh clone and nothing outside it: installs
# the peers once (harness/peers/setup.sh: Open MPI, iperf3, a venv with torch and mpi4py,
# about 3 GB), then runs Gloo, Open MPI over TCP and over shared memory, and dmsc (as
# deployed, and over TCP only) in one interleaved session at 2 and 4 ranks, with the machine's
# limits (iperf3, memcpy) before and after, and writes benches/peers/results-<date>.md.
#
#   bash benches/peers/compare.sh            # about 12 minutes on 2 cores, after the setup
#   WORLDS=2 OPS=allreduce bash benches/peers/compare.sh
#
# The harness (harness/peers/) measures every library with one method: per size, one
# correctness check, warm-up, then timed iterations of barrier; t0; op; t1, the time of an
# iteration being the maximum over ranks and the figure the median over iterations.
# Keep the machine otherwise idle while it runs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export VENV="${VENV:-/opt/peers-venv}"
export PY="$VENV/bin/python"
if ! "$PY" -c "import mpi4py, torch" 2>/dev/null; then
    bash "$HERE/harness/peers/setup.sh"
fi
cargo build --release -q --example peer_method --bin dmscrun --manifest-path "$ROOT/Cargo.toml"
DATE="${DATE:-$(date +%F-%H%M)}"
export PEERS_DIR="$HERE/harness/peers"
DATE="$DATE" DMSC_BENCH="bash $HERE/dmsc_both.sh" bash "$HERE/harness/peers/run_all.sh"
mv "$HERE/harness/peers/results-$DATE.md" "$HERE/results-$DATE.md"
echo "wrote benches/peers/results-$DATE.md (raw JSON and text: benches/peers/harness/peers/runs/$DATE/)"
