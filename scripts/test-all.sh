#!/usr/bin/env bash
# Every test of dmsc, from a fresh clone: formatting, lints, unit and property tests,
# multi-process tests over shared memory and again over TCP, the dmsc-perf correctness sweep on
# 1-8 local ranks, the C library against an installed prefix, the Python package with torch, and
# Python 3.13 in a chroot. Needs the Rust toolchain (cargo); what else it needs it installs:
# python3-venv, cmake, pkg-config, debootstrap, libibverbs1 and libibverbs-dev (the RDMA layout
# check) with apt-get (as root), numpy, pytest, mypy,
# maturin and torch (about 3 GB from PyPI) with pip into target/pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)"; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "== libibverbs1 and libibverbs-dev: the RDMA layout check compiles against <infiniband/verbs.h>"
if [ ! -e /usr/include/infiniband/verbs.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libibverbs1 libibverbs-dev >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libibverbs1 libibverbs-dev >/dev/null; } \
        || { echo "installing libibverbs-dev with apt-get failed"; exit 1; }
fi
if [ -e /usr/include/infiniband/verbs.h ]; then
    export DMSC_REQUIRE_VERBS_H=1 # rdma::ibv_abi's layout test fails instead of skipping
else
    echo "   <infiniband/verbs.h> missing and apt-get unavailable: the layout check will skip"
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test (release: the property tests and multi-process runs are compute-heavy)"
PROPTEST_CASES="${PROPTEST_CASES:-4096}" cargo test --workspace --release
echo "== CUDA without a GPU: the cuda feature builds, NVRTC compiles every kernel, the kernels match the host, stream ordering on a fake GPU"
bash scripts/cuda-check.sh
echo "== multi-process suites again over TCP only (DMSC_SHM=0; the run above used shared memory)"
DMSC_SHM=0 cargo test --release -p dmsc --test multiprocess --test peer_loss --test recovery \
    --test strangers --test dmscrun
echo "== dmsc-perf correctness sweep (every op, 1/2/3/4/5/8 ranks, all types and ops)"
bash benches/sweep.sh
echo "== C API: libdmsc.so/.a, header up to date and warning-free, exports, 4-rank C test (shared and static)"
bash tests/c/run.sh
echo "== Python package: wheel built with maturin, installed into a fresh venv with torch, pytest on 1-5 ranks (the torch backend included)"
DMSC_TORCH=1 bash tests/python/run.sh
echo "== Python 3.13: pip install ./python in a Debian trixie chroot, and its tests there"
bash tests/python/py313.sh
echo "== scheduler/ (the control layer, its own workspace): fmt, clippy, tests, benches compile"
CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" bash scheduler/ci.sh
echo "== RDMA on Soft-RoCE where the kernel allows it (skips with the reason otherwise)"
bash scripts/rdma-rxe.sh
echo "== criterion benches compile"
cargo bench --workspace --no-run -q
echo "== fuzzing: every wire decoder, 60 s per target (stable toolchain, fuzz/target)"
bash scripts/fuzz.sh 60
echo "== loom: model checks of the atomics and lock hand-offs (core/src/sync.rs; own target dir)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --release -p dmsc-core -p dmsc-transports -p dmsc --lib loom
echo "ALL TESTS PASSED"
