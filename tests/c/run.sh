#!/usr/bin/env bash
# The C API suite: builds libdmsc.so / libdmsc.a and dmscrun, checks the shared library's
# SONAME and exported symbols, compiles the header as C99 and C++17 with warnings as errors,
# and runs tests/c/dmsc_test.c as 4 ranks under dmscrun, linked shared and then static, then
# once more (its path-metrics checks only) with packet spraying over TCP: DMSC_SHM=0,
# DMSC_PATHS=3, DMSC_CMA=0 (ranks of one host otherwise meet in shared memory).
# Called by scripts/test-all.sh; runnable alone:  bash tests/c/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REL=$ROOT/target/release
OUT=$ROOT/target/c-test
NP=${DMSC_C_TEST_NP:-4}
CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS=(-std=c99 -Wall -Wextra -Werror -pedantic -O1 -g -I"$ROOT/include")
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -pedantic -O1 -g -I"$ROOT/include")
# `rustc --print native-static-libs` for libdmsc.a on Linux (glibc).
STATIC_LIBS=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)

die() { echo "tests/c/run.sh: FAILED: $*" >&2; exit 1; }
step() { echo "-- $*"; }
for tool in cargo "$CC" "$CXX" nm readelf; do
    command -v "$tool" >/dev/null || die "'$tool' not found (needed: cargo, a C and a C++ compiler, binutils)"
done

step "cargo build --release -p dmsc-ffi; cargo build --release --bin dmscrun"
cargo build --release -p dmsc-ffi || die "building libdmsc (cargo build --release -p dmsc-ffi)"
cargo build --release --bin dmscrun || die "building dmscrun"
for f in libdmsc.so libdmsc.a dmscrun; do
    [ -e "$REL/$f" ] || die "target/release/$f was not built"
done

step "SONAME is libdmsc.so.0"
soname=$(readelf -d "$REL/libdmsc.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = libdmsc.so.0 ] || die "SONAME of libdmsc.so is '$soname', expected libdmsc.so.0"

step "exported symbols: only dmsc*, and every function of the header"
exported=$(nm -D --defined-only "$REL/libdmsc.so" | awk '{print $3}' | sort)
stray=$(grep -v '^dmsc' <<<"$exported" || true)
[ -z "$stray" ] || die "libdmsc.so exports symbols outside the dmsc* API:
$stray"
declared=$(grep -oE '^[a-zA-Z_ ]+\*? ?(dmsc[A-Za-z]+)\(' include/dmsc.h | grep -oE 'dmsc[A-Za-z]+\($' | tr -d '(' | sort)
missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
[ -z "$missing" ] || die "functions declared in include/dmsc.h but not exported: $missing"
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
[ -z "$extra" ] || die "symbols exported but not declared in include/dmsc.h: $extra"
echo "   $(wc -l <<<"$exported") symbols exported, all declared in include/dmsc.h"

step "include/dmsc.h is up to date (cargo test -p dmsc-ffi --test header)"
cargo test --release -q -p dmsc-ffi --test header >/dev/null 2>&1 \
    || die "include/dmsc.h is stale: run  DMSC_BLESS=1 cargo test -p dmsc-ffi --test header"

rm -rf "$OUT"
mkdir -p "$OUT/lib"
# Programs record the SONAME; give the loader that name next to the library.
cp "$REL/libdmsc.so" "$OUT/lib/libdmsc.so"
ln -s libdmsc.so "$OUT/lib/libdmsc.so.0"

step "header compiles alone: $CC ${CFLAGS[*]} and $CXX ${CXXFLAGS[*]}"
"$CC" "${CFLAGS[@]}" -fsyntax-only -x c include/dmsc.h || die "include/dmsc.h does not compile as C99"
"$CXX" "${CXXFLAGS[@]}" -fsyntax-only -x c++ include/dmsc.h || die "include/dmsc.h does not compile as C++17"
"$CXX" "${CXXFLAGS[@]}" tests/c/header_check.cpp -L"$OUT/lib" -ldmsc -Wl,-rpath,"$OUT/lib" \
    -o "$OUT/header_check" || die "tests/c/header_check.cpp does not build"
"$OUT/header_check" || die "tests/c/header_check.cpp failed"

step "build tests/c/dmsc_test.c against libdmsc.so and libdmsc.a"
"$CC" "${CFLAGS[@]}" tests/c/dmsc_test.c -L"$OUT/lib" -ldmsc -Wl,-rpath,"$OUT/lib" -lpthread -lm \
    -o "$OUT/dmsc_test_shared" || die "dmsc_test.c does not build against libdmsc.so"
"$CC" "${CFLAGS[@]}" tests/c/dmsc_test.c "$REL/libdmsc.a" "${STATIC_LIBS[@]}" \
    -o "$OUT/dmsc_test_static" || die "dmsc_test.c does not link against libdmsc.a"
if readelf -d "$OUT/dmsc_test_static" | grep -q 'libdmsc'; then
    die "the static test program still needs libdmsc.so"
fi
readelf -d "$OUT/dmsc_test_shared" | grep -q 'NEEDED.*\[libdmsc.so.0\]' \
    || die "the shared test program does not record libdmsc.so.0"

# Loopback only: the test must not depend on the machine's network interfaces.
export DMSC_SOCKET_IFNAME=${DMSC_SOCKET_IFNAME:-lo}
export DMSC_TIMEOUT=${DMSC_TIMEOUT:-120}
for kind in shared static; do
    step "dmscrun -n $NP -- dmsc_test_$kind"
    timeout 600 "$REL/dmscrun" -n "$NP" -- "$OUT/dmsc_test_$kind" \
        || die "dmsc_test_$kind failed under dmscrun -n $NP (exit $?)"
done
# Packet spraying: dmscCommGetPathMetrics with 3 paths per peer, every byte on the sockets.
step "DMSC_SHM=0 DMSC_PATHS=3 DMSC_CMA=0 dmscrun -n $NP -- dmsc_test_shared paths"
DMSC_SHM=0 DMSC_PATHS=3 DMSC_CMA=0 timeout 300 "$REL/dmscrun" -n "$NP" -- "$OUT/dmsc_test_shared" paths \
    || die "dmsc_test_shared paths failed under DMSC_PATHS=3 DMSC_CMA=0 dmscrun -n $NP (exit $?)"
# The README's instructions, followed exactly: install into a prefix, build the example with
# -I$PREFIX/include -L$PREFIX/lib -ldmsc, run it with the prefix on the loader's path.
PREFIX_DIR=$OUT/prefix
step "README: bash scripts/install-c.sh PREFIX; cc -I\$PREFIX/include readme_example.c -L\$PREFIX/lib -ldmsc"
bash scripts/install-c.sh "$PREFIX_DIR" >/dev/null || die "scripts/install-c.sh failed"
for f in lib/libdmsc.so lib/libdmsc.so.0 lib/libdmsc.a include/dmsc.h lib/pkgconfig/dmsc.pc; do
    [ -e "$PREFIX_DIR/$f" ] || die "scripts/install-c.sh did not install $f"
done
"$CC" -I"$PREFIX_DIR/include" tests/c/readme_example.c -L"$PREFIX_DIR/lib" -ldmsc -o "$OUT/readme_example" \
    || die "the README's build command fails"
out=$(LD_LIBRARY_PATH="$PREFIX_DIR/lib" timeout 120 "$REL/dmscrun" -n 2 -- "$OUT/readme_example") \
    || die "the README's example does not start or run: $out"
[ "$(grep -c README-EXAMPLE-OK <<<"$out")" = 2 ] || die "the README's example did not pass on both ranks: $out"
# Against the installed prefix only: pkg-config, and a CMake project with find_package(dmsc).
export PKG_CONFIG_PATH="$PREFIX_DIR/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
step "pkg-config --cflags --libs dmsc: readme_example on 3 ranks, init_all_test (dmscCommInitAll, dmscBcast, dmscCommFinalize)"
command -v pkg-config >/dev/null || die "pkg-config not found (apt-get install pkg-config)"
[ "$(pkg-config --modversion dmsc)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] \
    || die "pkg-config reports dmsc $(pkg-config --modversion dmsc), not the workspace version"
# shellcheck disable=SC2046
"$CC" -std=c99 -Wall -Wextra -Werror tests/c/readme_example.c $(pkg-config --cflags --libs dmsc) \
    -o "$OUT/readme_example_pc" || die "readme_example.c does not build with pkg-config"
out=$(LD_LIBRARY_PATH="$PREFIX_DIR/lib" timeout 120 "$REL/dmscrun" -n 3 -- "$OUT/readme_example_pc") \
    || die "the pkg-config build does not run on 3 ranks: $out"
[ "$(grep -c README-EXAMPLE-OK <<<"$out")" = 3 ] || die "the pkg-config build did not pass on 3 ranks: $out"
# shellcheck disable=SC2046
"$CC" -std=c99 -Wall -Wextra -Werror tests/c/init_all_test.c $(pkg-config --cflags --libs dmsc) -lpthread \
    -o "$OUT/init_all_test" || die "init_all_test.c does not build with pkg-config"
out=$(LD_LIBRARY_PATH="$PREFIX_DIR/lib" timeout 120 "$OUT/init_all_test" 2>&1) \
    || die "init_all_test failed: $out"
grep -q INIT-ALL-OK <<<"$out" || die "init_all_test did not pass: $out"
step "cmake: find_package(dmsc) with CMAKE_PREFIX_PATH=prefix, shared and static, 3 ranks"
if ! command -v cmake >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q cmake >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q cmake >/dev/null; } \
            || die "installing cmake with apt-get failed"
    else
        die "cmake not found (install it, e.g. apt-get install cmake)"
    fi
fi
rm -rf "$OUT/cmake-build"
cmake -S tests/c/cmake -B "$OUT/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX_DIR" \
    -DEXAMPLE_SOURCE="$ROOT/tests/c/readme_example.c" >/dev/null || die "cmake could not configure against the prefix"
cmake --build "$OUT/cmake-build" >/dev/null || die "the CMake project does not build"
for exe in readme_example_cmake readme_example_cmake_static; do
    out=$(LD_LIBRARY_PATH="$PREFIX_DIR/lib" timeout 120 "$REL/dmscrun" -n 3 -- "$OUT/cmake-build/$exe") \
        || die "$exe does not run on 3 ranks: $out"
    [ "$(grep -c README-EXAMPLE-OK <<<"$out")" = 3 ] || die "$exe did not pass on 3 ranks: $out"
done
echo "C API tests passed (shared and static, $NP ranks; path metrics with 3 paths per peer; installed prefix via pkg-config and CMake on 3 ranks; dmscCommInitAll)"
