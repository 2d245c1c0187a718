#!/usr/bin/env bash
# Build libdmsc and install it into a prefix, the way a system library is laid out:
#   PREFIX/lib/libdmsc.so.X.Y.Z, its SONAME link libdmsc.so.X and the link-time libdmsc.so,
#   PREFIX/lib/libdmsc.a, PREFIX/include/dmsc.h, PREFIX/lib/pkgconfig/dmsc.pc and the CMake
#   package PREFIX/lib/cmake/dmsc (find_package(dmsc): imported targets dmsc::dmsc, shared,
#   and dmsc::dmsc_static).
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
mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/lib/cmake/dmsc" "$PREFIX/include"
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
# The CMake package locates itself: the prefix is two directories above this file, so the
# installed tree may be moved.
cat > "$PREFIX/lib/cmake/dmsc/dmscConfig.cmake" <<'CMAKE'
# find_package(dmsc): the C API of dmsc. Defines dmsc::dmsc (libdmsc.so) and
# dmsc::dmsc_static (libdmsc.a with the system libraries it needs), and dmsc_VERSION.
get_filename_component(_dmsc_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET dmsc::dmsc)
  add_library(dmsc::dmsc SHARED IMPORTED)
  set_target_properties(dmsc::dmsc PROPERTIES
    IMPORTED_LOCATION "${_dmsc_prefix}/lib/libdmsc.so.@MAJOR@"
    IMPORTED_SONAME "libdmsc.so.@MAJOR@"
    INTERFACE_INCLUDE_DIRECTORIES "${_dmsc_prefix}/include")
  add_library(dmsc::dmsc_static STATIC IMPORTED)
  set_target_properties(dmsc::dmsc_static PROPERTIES
    IMPORTED_LOCATION "${_dmsc_prefix}/lib/libdmsc.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_dmsc_prefix}/include"
    INTERFACE_LINK_LIBRARIES "gcc_s;util;rt;pthread;m;dl;c")
endif()
set(dmsc_INCLUDE_DIRS "${_dmsc_prefix}/include")
set(dmsc_LIBRARIES dmsc::dmsc)
unset(_dmsc_prefix)
CMAKE
sed -i "s/@MAJOR@/$MAJOR/g" "$PREFIX/lib/cmake/dmsc/dmscConfig.cmake"
cat > "$PREFIX/lib/cmake/dmsc/dmscConfigVersion.cmake" <<CMAKE
# Version of the installed dmsc; compatible with requests of the same major version
# (the SONAME's), not older than the one asked for.
set(PACKAGE_VERSION "$VERSION")
if(PACKAGE_FIND_VERSION_MAJOR STREQUAL "$MAJOR" AND NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
elseif(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
CMAKE
echo "installed libdmsc $VERSION into $PREFIX (lib/libdmsc.so.$MAJOR, include/dmsc.h, lib/pkgconfig/dmsc.pc, lib/cmake/dmsc)"
