#!/usr/bin/env bash
# The RDMA transport on Soft-RoCE (rxe) over loopback, where the kernel allows it; otherwise
# a skip that says why (exit 0). Needs root, the rdma tool (iproute2), the rdma_rxe kernel
# module and rdma-core's libibverbs.so.1.
#
# What it runs: 2 local ranks of dmsc-perf all_reduce with DMSC_TRANSPORT=rdma on rxe0, over
# the libibverbs queue-pair path (transports/src/rdma/sys_context.rs, libibverbs loaded at run
# time). A fallback to TCP is a failure here, printed with its reason. This path has never
# run on a real device or on Soft-RoCE where it was written (no kernel allowed it). The fake-verbs suite
# (`cargo test -p dmsc-transports --release rdma::`) runs everywhere.
set -uo pipefail
cd "$(dirname "$0")/.."

skip() { echo "rdma-rxe: SKIP: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root to create a Soft-RoCE link"
command -v rdma >/dev/null || skip "the rdma tool (iproute2) is not installed"
if [ ! -d /sys/module/rdma_rxe ]; then
    modprobe rdma_rxe 2>/dev/null || skip "the kernel has no rdma_rxe module (no InfiniBand/RoCE support: $(uname -r))"
fi
created=0
if ! rdma link show rxe0 >/dev/null 2>&1; then
    out=$(rdma link add rxe0 type rxe netdev lo 2>&1) || skip "rdma link add rxe0 type rxe netdev lo failed: $out"
    created=1
fi
cleanup() { [ "$created" = 1 ] && rdma link delete rxe0 >/dev/null 2>&1; }
trap cleanup EXIT
[ -d /sys/class/infiniband/rxe0 ] || skip "rxe0 was created but /sys/class/infiniband/rxe0 is missing"

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo build --release -q --bin dmscrun --bin dmsc-perf || exit 1
log=$(DMSC_TRANSPORT=rdma DMSC_IB_HCA==rxe0 DMSC_DEBUG=info DMSC_DEBUG_SUBSYS=NET \
    target/release/dmscrun -n 2 target/release/dmsc-perf all_reduce -b 8 -e 1M 2>&1)
rc=$?
echo "$log" | tail -n 20
[ "$rc" = 0 ] || { echo "rdma-rxe: FAIL: dmsc-perf exited $rc"; exit 1; }
if echo "$log" | grep -q "RDMA not used, falling back to TCP"; then
    echo "rdma-rxe: FAIL: the ranks fell back to TCP on rxe0:"
    echo "$log" | grep "RDMA not used"
    exit 1
fi
echo "rdma-rxe: PASS: dmsc-perf ran over rxe0"
