#!/usr/bin/env bash
# The CUDA checks that need no GPU (issue 12), as run by scripts/test-all.sh:
#  - the `cuda` feature builds and is clippy-clean (cudarc loads CUDA at run time, so no CUDA
#    toolkit or driver is needed to build);
#  - NVRTC compiles every kernel of transports/src/cuda/kernels.cu to PTX (compute_70/80/90)
#    and a CUBIN (sm_90): NVRTC comes from the PyPI wheel nvidia-cuda-nvrtc-cu12, installed
#    here into target/nvrtc-venv;
#  - the same kernel source, built as host C++, matches dmsc-core's host reductions for every
#    type and op, and the crc32c crate;
#  - the stream-ordering state machine against the fake GPU;
#  - without a driver, opening a CUDA device is an error, not a panic;
#  - the C ABI with the feature (pointer classification, streams for device buffers).
# DMSC_CUDA_CHECKS_REQUIRED=1 turns the tests' "SKIPPED" (no NVRTC, no C++ compiler) into
# failures, so CI cannot pass without running them. The checks that need a GPU are
# scripts/gpu-check.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/nvrtc-venv
NVRTC_WHEEL="nvidia-cuda-nvrtc-cu12==12.9.86"
lib() { ls "$VENV"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 2>/dev/null | head -1; }
if [ -z "$(lib)" ]; then
    echo "-- installing $NVRTC_WHEEL into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "$NVRTC_WHEEL"
fi
export DMSC_NVRTC_LIB="$(cd "$(dirname "$(lib)")" && pwd)/libnvrtc.so.12"
export DMSC_CUDA_CHECKS_REQUIRED=1
echo "-- NVRTC: $DMSC_NVRTC_LIB"
cargo clippy -p dmsc-transports -p dmsc -p dmsc-ffi --features dmsc-ffi/cuda --all-targets -- -D warnings
cargo test -p dmsc-transports --features cuda --lib cuda:: -- --nocapture
cargo test -p dmsc-ffi --features cuda --lib
# The GPU tests: without a GPU each prints SKIPPED (scripts/gpu-check.sh runs them on one).
cargo test -p dmsc-transports --features cuda --test cuda_gpu -- --nocapture
# The communicator's collectives on GPU buffers: skipped (visibly) without a GPU; the same
# calls run on a fake device in tests/device_calls.rs with every cargo test.
cargo test -p dmsc --features cuda --test cuda_calls_gpu -- --nocapture
# The communicator's device calls with the feature on, on the FAKE device: the pipelined TCP
# staging, and dmsc-perf --device on fake device buffers.
cargo test -p dmsc --features cuda --test device_calls
cargo test -p dmsc --features cuda --lib perf::device
