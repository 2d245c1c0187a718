#!/usr/bin/env bash
# `pip install ./python` on CPython 3.13, and the package's tests there.
#
# Debian 12, the machine's system, has Python 3.11 only; Debian 13 (trixie) has 3.13. This
# script builds a minimal trixie root with debootstrap (from the Debian archive, cached in
# target/trixie), copies the working tree's tracked files into it, and runs, inside a chroot:
# a fresh venv, `pip install ./python` (maturin builds the abi3 wheel from source with the
# host's Rust toolchain, bind-mounted), then the numpy, operator, logging and failure tests.
# Needs root (debootstrap, chroot, bind mounts); without it the script says so and exits 0
# with SKIPPED, so that a CI without those rights reports rather than fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CH=$ROOT/target/trixie

skip() { echo "SKIPPED (Python 3.13 not tested): $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root for debootstrap and chroot"
command -v apt-get >/dev/null || skip "needs apt-get (a Debian system) for debootstrap"
if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ ! -x "$CH/usr/bin/python3.13" ]; then
    echo "== debootstrap Debian trixie (python3.13) into target/trixie"
    rm -rf "$CH"
    debootstrap --variant=minbase --include=python3.13,python3.13-venv,gcc,libc6-dev \
        trixie "$CH" http://deb.debian.org/debian >/dev/null
fi

mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {
    mkdir -p "$2"
    mount --bind "$1" "$2" || skip "cannot bind-mount $1 (no CAP_SYS_ADMIN?)"
    mounts+=("$2")
}
bind /dev "$CH/dev"
bind /dev/shm "$CH/dev/shm"
bind /proc "$CH/proc"
bind /sys "$CH/sys"
bind "${CARGO_HOME:-$HOME/.cargo}" "$CH/root/.cargo"
bind "${RUSTUP_HOME:-$HOME/.rustup}" "$CH/root/.rustup"
cp /etc/resolv.conf "$CH/etc/resolv.conf"
# The host's certificate bundle (it may hold a proxy's authority that pip needs).
mkdir -p "$CH/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$CH/etc/ssl/certs/"

echo "== the working tree's tracked files into the chroot"
rm -rf "$CH/src/dmsc" && mkdir -p "$CH/src/dmsc"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$CH/src/dmsc"

echo "== inside trixie: python3.13 -m venv; pip install ./python; pytest"
chroot "$CH" env -i PATH=/root/.cargo/bin:/usr/bin:/bin HOME=/root \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" bash -euo pipefail -c '
    cd /src/dmsc
    rm -rf /tmp/v313 && python3.13 -m venv /tmp/v313
    /tmp/v313/bin/pip install -q numpy pytest
    /tmp/v313/bin/pip install -q ./python
    /tmp/v313/bin/python -c "import sys, dmsc; print(\"   dmsc\", dmsc.__version__, \"on Python\", sys.version.split()[0])"
    /tmp/v313/bin/python -m pytest -q -p no:cacheprovider tests/python -k "numpy or logging or failures"
'
echo "Python 3.13: pip install ./python and its tests passed"
