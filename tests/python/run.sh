#!/usr/bin/env bash
# The Python package's tests, from a fresh clone: lint the python/ crate (it is outside the
# Cargo workspace), build the wheel with maturin, install it into a fresh venv
# (target/pyenv) with numpy, pytest and mypy, check the type stubs, and run tests/python on
# 1-5 ranks.
# Needs the Rust toolchain and python3 >= 3.11 with venv (installed with apt-get when missing
# and running as root). torch is not installed unless DMSC_TORCH=1: then `pip install torch`
# (from PyPI: with its CUDA wheels, ~3 GB, cached in ~/.cache/pip) goes into the venv and the
# torch tests (test_torch_backend.py, the torch case of test_collectives.py) must run: with
# DMSC_TORCH=1 a missing torch fails them instead of skipping them. Without it they skip.
# Set DMSC_PYENV_REUSE=1 to keep an existing target/pyenv (faster local reruns).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=$ROOT/target/pyenv
export CARGO_TERM_COLOR=never

have_venv() { python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }
if ! command -v python3 >/dev/null || ! have_venv; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing python3 and python3-venv with apt-get"
        apt-get update -qq
        ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || true)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv ${ver:+python$ver-venv} >/dev/null
    else
        echo "python3 with the venv module is required (apt-get install python3-venv)"; exit 1
    fi
fi
python3 -c 'import sys; assert sys.version_info >= (3, 11), "dmsc needs Python >= 3.11 (abi3-py311)"'

if [ "${DMSC_PYENV_REUSE:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
    echo "== fresh venv in $VENV: maturin, numpy, pytest"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "maturin>=1.9.4,<2" numpy pytest mypy
fi
PY=$VENV/bin/python
export PYO3_PYTHON=$PY
if [ "${DMSC_TORCH:-0}" = 1 ]; then
    export DMSC_TORCH
    if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
        echo "== DMSC_TORCH=1: pip install torch (PyPI)"
        "$PY" -m pip install -q torch
    fi
    echo "   torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi

echo "== python/ crate: cargo fmt --check, clippy -D warnings"
cargo fmt --manifest-path python/Cargo.toml -- --check
cargo clippy -q --manifest-path python/Cargo.toml --release --all-targets -- -D warnings

echo "== maturin build --release (abi3 wheel) and install into the venv"
rm -f target/wheels/dmsc-*.whl
"$VENV/bin/maturin" build --release -m python/Cargo.toml -o target/wheels
"$PY" -m pip install -q --force-reinstall --no-deps target/wheels/dmsc-*.whl

echo "== wheel tag: abi3 for CPython >= 3.11 and a manylinux tag that the library's glibc needs allow"
whl=$(basename target/wheels/dmsc-*.whl)
tag=$(sed -n 's/^dmsc-[^-]*-cp311-abi3-manylinux_2_\([0-9]*\)_x86_64\.whl$/\1/p' <<<"$whl")
[ -n "$tag" ] || { echo "wheel $whl is not tagged cp311-abi3-manylinux_2_N_x86_64"; exit 1; }
so=$("$PY" -c 'import dmsc._dmsc as m; print(m.__file__)')
need=$(objdump -T "$so" | grep -o 'GLIBC_2\.[0-9]*' | sed 's/GLIBC_2\.//' | sort -n | tail -1)
[ "${need:-0}" -le "$tag" ] || { echo "wheel $whl claims manylinux_2_$tag but $so needs GLIBC_2.$need"; exit 1; }
echo "   $whl: needs glibc 2.$need at most, tagged manylinux_2_$tag"

echo "== the dmscrun console script launches ranks"
out=$("$VENV/bin/dmscrun" -n 2 --no-python "$PY" -c 'import os; print("RANK-" + os.environ["RANK"])')
[ "$(grep -c 'RANK-[01]' <<<"$out")" = 2 ] || { echo "dmscrun (console script) did not start 2 ranks: $out"; exit 1; }

echo "== type stubs match the module (mypy stubtest)"
# With torch installed the torch backend's modules are checked too; without it they cannot be
# imported, and tests/python/stubtest-no-torch.{ini,txt} name them (nothing else).
if "$PY" -c 'import torch' >/dev/null 2>&1; then
    (cd "$ROOT/target" && "$PY" -m mypy.stubtest dmsc --allowlist "$ROOT/tests/python/stubtest-torch.txt")
else
    (cd "$ROOT/target" && "$PY" -m mypy.stubtest dmsc --mypy-config-file "$ROOT/tests/python/stubtest-no-torch.ini" \
        --allowlist "$ROOT/tests/python/stubtest-no-torch.txt")
fi

echo "== pytest tests/python"
cd "$ROOT"
# Import the installed wheel, never the source tree.
timeout 900 "$PY" -m pytest -q -rs -p no:cacheprovider tests/python "$@"
