#!/usr/bin/env bash
# The CUDA checks that need a GPU (issue 12), in under 5 minutes on one GPU.
#
#   bash scripts/gpu-check.sh prepare   on a machine with cargo (no GPU needed): builds the
#                                       test binaries and dmsc-perf (release, stripped) and
#                                       the kernels' CUBINs for sm_80/sm_90 with NVRTC into
#                                       target/gpu-check/ (a few tens of MiB)
#   bash scripts/gpu-check.sh           on the GPU machine, with target/gpu-check/ there (a GPU
#                                       machine needs neither cargo nor NVRTC nor a network);
#                                       prepares first where cargo is available
#
# What runs: transports/tests/cuda_gpu.rs with DMSC_CUDA_GPU_REQUIRED=1 (the CUDA device's
# kernels against the host for every type and op on 1 .. 2^20+3 elements, copies, CRC32C,
# pointer attributes, IPC export, the stream ordering on the real driver, device reduction
# figures, and staging throughput through pinned slots against a plain cuMemcpyDtoH),
# tests/cuda_calls_gpu.rs (every collective x type x op on device buffers through the
# communicator, 2 and 4 ranks sharing the GPU, TCP staging pipelined in pieces), the CUDA
# unit tests, and dmsc-perf all_reduce at 64 MiB and 256 MiB on 2 and 4 ranks on host memory
# (the baseline) and on device buffers (--device cuda, TCP staging), and benches/gpu/
# (the communicator's staging against a plain cuMemcpy).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=target/gpu-check
NVRTC_WHEEL="nvidia-cuda-nvrtc-cu12==12.9.86"

prepare() {
    local venv=target/nvrtc-venv lib
    lib=$(ls "$venv"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 2>/dev/null | head -1 || true)
    if [ -z "$lib" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$NVRTC_WHEEL"
        lib=$(ls "$venv"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 | head -1)
    fi
    export DMSC_NVRTC_LIB="$PWD/$lib"
    mkdir -p "$DIR/bin" "$DIR/cache"
    cargo build --release -q -p dmsc --features cuda --bin dmsc-perf
    cp target/release/dmsc-perf "$DIR/bin/"
    # The test executables cargo builds, by target name.
    cargo test --release -q -p dmsc-transports --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe:
        name = m["target"]["name"]
        if name in ("cuda_gpu", "dmsc_transports"):
            shutil.copy(exe, sys.argv[1] + "/" + name)
            print("built", name)
' "$DIR/bin"
    # The communicator's collectives on device buffers (tests/cuda_calls_gpu.rs).
    cargo test --release -q -p dmsc --features cuda --test cuda_calls_gpu --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] == "cuda_calls_gpu":
        shutil.copy(exe, sys.argv[1] + "/cuda_calls_gpu")
        print("built cuda_calls_gpu")
' "$DIR/bin"
    # benches/gpu/: the communicator's staging against a plain cuMemcpy.
    cargo bench -q -p dmsc --features cuda --bench gpu_staging --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys, shutil
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] == "gpu_staging":
        shutil.copy(exe, sys.argv[1] + "/gpu_staging")
        print("built gpu_staging")
' "$DIR/bin"
    strip "$DIR"/bin/* 2>/dev/null || true
    cargo run --release -q -p dmsc-transports --features cuda --example cuda_kernel_cache -- "$DIR/cache" 80 90
    du -sh "$DIR"
}

if [ "${1:-}" = prepare ]; then
    prepare
    exit 0
fi
if [ ! -x "$DIR/bin/cuda_gpu" ]; then
    if command -v cargo >/dev/null; then
        prepare
    else
        echo "no $DIR/bin/cuda_gpu and no cargo here: run 'bash scripts/gpu-check.sh prepare' on a build machine and bring $DIR"
        exit 1
    fi
fi
start=$(date +%s)
echo "== GPU"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"
export DMSC_CUDA_CACHE_DIR="$PWD/$DIR/cache" DMSC_CUDA_GPU_REQUIRED=1 RUST_BACKTRACE=1
echo "== CUDA device against the host, stream ordering on the driver (transports/tests/cuda_gpu.rs)"
LOG="$DIR/gpu-check.log"
timeout 240 "$DIR/bin/cuda_gpu" --test-threads=1 --nocapture 2>&1 | tee "$LOG"
echo "== collectives on device buffers through the communicator, 2 and 4 ranks on GPU 0, TCP staging (tests/cuda_calls_gpu.rs)"
timeout 120 "$DIR/bin/cuda_calls_gpu" --test-threads=1 --nocapture 2>&1 | tee -a "$LOG"
echo "== CUDA unit tests (fake GPU, host build of the kernels; NVRTC ones skip without DMSC_NVRTC_LIB)"
timeout 60 "$DIR/bin/dmsc_transports" cuda:: --test-threads=1
echo "== benches/gpu: the communicator's staging against plain cuMemcpyDtoH + cuMemcpyHtoD (64 and 256 MiB)"
timeout 60 "$DIR/bin/gpu_staging" 2>&1 | tee -a "$LOG"
echo "== dmsc-perf all_reduce on host memory (the baseline for the device paths)"
for np in 2 4; do
    timeout 120 "$DIR/bin/dmsc-perf" --np "$np" all_reduce -b 64M -e 256M -f 4 -n 5 -w 2 -c 1 2>&1 | tee -a "$LOG"
done
echo "== dmsc-perf all_reduce on device buffers (--device cuda: TCP staging, 2 and 4 ranks on the GPUs)"
for np in 2 4; do
    timeout 120 "$DIR/bin/dmsc-perf" --np "$np" all_reduce --device cuda -b 64M -e 256M -f 4 -n 5 -w 2 -c 1 2>&1 | tee -a "$LOG"
done
echo "== figures"
grep -E '^FIGURE|^ +(67108864|268435456) ' "$LOG" || true
echo "== not run here (not built yet): collectives on device buffers over CUDA IPC, torch CUDA"
echo "   tensors through the Python package"
echo "gpu-check done in $(( $(date +%s) - start )) s"
