#!/usr/bin/env bash
# CI for the scheduler crate (its own workspace): formatting, lints, every test in release,
# and the benches compiled. Run from anywhere: bash scheduler/ci.sh
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
cargo bench --no-run
echo "scheduler ci: ok"
