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

# The etcd registry backend (feature `etcd`): its lints and its tests against a real etcd,
# which the tests start on loopback. Debian's etcd-server is installed when we are root with
# apt-get; elsewhere the step runs if `etcd` is on the PATH and is skipped, saying so, if not.
if ! command -v etcd >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing etcd-server for the etcd registry tests"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null; } ||
        echo "could not install etcd-server"
fi
if command -v etcd >/dev/null 2>&1; then
    cargo clippy --release --all-targets --features etcd -- -D warnings
    cargo test --release --features etcd --lib --test etcd
else
    echo "skipping the etcd registry tests: no etcd (install Debian's etcd-server)"
fi
echo "scheduler ci: ok"
