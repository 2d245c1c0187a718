#!/usr/bin/env bash
# Build libdmsc and install it into a prefix, the way a system library is laid out:
#   PREFIX/lib/libdmsc.so.X.Y.Z, its SONAME link libdmsc.so.X and the link-time libdmsc.so,
#   PREFIX/lib/libdmsc.a, PREFIX/include/dmsc.h and PREFIX/lib/pkgconfig/dmsc.pc.
# Cargo builds target/release/libdmsc.so with the SONAME libdmsc.so.0 but cannot make the
# libdmsc.so.0 file that a program linked against it then asks the loader for; this does.
#   bash scripts/install-c.sh /usr/local        (or any prefix, e.g. $HOME/.local)
set -euo pipefail
PREFIX=${1:?usage: bash scripts/install-c.sh PREFIX}
cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR=${VERSION%%.*}
[ -n "$VERSION" ] || { echo "install-c.sh: no version in Cargo.toml" >&2; exit 1; }
cargo build --release -p dmsc-ffi
mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include"
PREFIX=$(cd "$PREFIX" && pwd)
install -m 755 target/release/libdmsc.so "$PREFIX/lib/libdmsc.so.$VERSION"
ln -sf "libdmsc.so.$VERSION" "$PREFIX/lib/libdmsc.so.$MAJOR"
ln -sf "libdmsc.so.$MAJOR" "$PREFIX/lib/libdmsc.so"
install -m 644 target/release/libdmsc.a "$PREFIX/lib/libdmsc.a"
install -m 644 include/dmsc.h "$PREFIX/include/dmsc.h"
cat > "$PREFIX/lib/pkgconfig/dmsc.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: dmsc
Description: Collective communication for distributed AI (NCCL-shaped C API)
Version: $VERSION
Libs: -L\${libdir} -ldmsc
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
PC
echo "installed libdmsc $VERSION into $PREFIX (lib/libdmsc.so.$MAJOR, include/dmsc.h, lib/pkgconfig/dmsc.pc)"
