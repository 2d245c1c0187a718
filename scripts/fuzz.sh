#!/usr/bin/env bash
# Bounded fuzzing of every decoder of bytes from the network (the targets in fuzz/fuzz_targets,
# libFuzzer through libfuzzer-sys, as cargo-fuzz sets it up).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s for each target
#
# Each target starts from its checked-in seed corpus fuzz/corpus/<target> (never written to;
# new inputs go to fuzz/target/corpus/<target>) and runs for SECONDS. The script prints the
# executions per target and fails on any crash, leaving the crashing input in
# fuzz/artifacts/<target>/ (replay it with the printed command).
#
# With cargo-fuzz and a nightly toolchain installed (and FUZZ_DIRECT unset) it uses
# `cargo fuzz run` (AddressSanitizer). Otherwise it builds the targets with stable cargo and the
# coverage instrumentation cargo-fuzz uses for `--sanitizer none`. Builds go to fuzz/target,
# never touching the main build. fuzz/Cargo.lock pins the fuzz crate's dependencies; a
# dependency added to dmsc-core or dmsc-transports is resolved into it on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
export CARGO_TERM_COLOR=never

all_targets() {
    for f in fuzz/fuzz_targets/*.rs; do basename "$f" .rs; done
}
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(all_targets)
fi

export CARGO_TARGET_DIR="$PWD/fuzz/target"
if [ -z "${FUZZ_DIRECT:-}" ] && cargo fuzz --version >/dev/null 2>&1 &&
    cargo +nightly --version >/dev/null 2>&1; then
    MODE=cargo-fuzz
    echo "== building ${#TARGETS[@]} fuzz targets with cargo fuzz (nightly, AddressSanitizer)"
    for t in "${TARGETS[@]}"; do
        cargo +nightly fuzz build --fuzz-dir fuzz -O "$t"
    done
else
    MODE=direct
    HOST="$(rustc -vV | sed -n 's/^host: //p')"
    echo "== building ${#TARGETS[@]} fuzz targets with $(cargo --version) (sancov, no sanitizer)"
    # The flags of `cargo fuzz build --sanitizer none`. With --target, RUSTFLAGS skip build
    # scripts and proc macros, as with cargo-fuzz.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
-Coverflow-checks" \
        cargo build --manifest-path fuzz/Cargo.toml --release --target "$HOST" \
        $(printf -- '--bin %s ' "${TARGETS[@]}")
    BIN_DIR="$CARGO_TARGET_DIR/$HOST/release"
fi

declare -A EXECS
failed=()
for t in "${TARGETS[@]}"; do
    seeds="fuzz/corpus/$t"
    work="fuzz/target/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$work" "$artifacts"
    [ -d "$seeds" ] || { echo "missing seed corpus $seeds"; exit 1; }
    log="fuzz/target/$t.log"
    echo "== fuzzing $t for ${SECONDS_EACH}s"
    # libFuzzer adds new inputs to the first corpus directory only.
    args=(-max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048
        -artifact_prefix="$PWD/$artifacts/")
    set +e
    if [ "$MODE" = cargo-fuzz ]; then
        cargo +nightly fuzz run --fuzz-dir fuzz -O "$t" "$PWD/$work" "$PWD/$seeds" \
            -- "${args[@]}" >"$log" 2>&1
    else
        "$BIN_DIR/$t" "${args[@]}" "$work" "$seeds" >"$log" 2>&1
    fi
    rc=$?
    set -e
    n="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    EXECS[$t]="${n:-?}"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t failed (exit $rc); last lines of $log:"
        tail -40 "$log"
        crash="$(ls -t "$artifacts" 2>/dev/null | head -1)"
        if [ -n "$crash" ]; then
            if [ "$MODE" = cargo-fuzz ]; then
                echo "replay: cargo +nightly fuzz run --fuzz-dir fuzz $t $artifacts/$crash"
            else
                echo "replay: $BIN_DIR/$t $artifacts/$crash"
            fi
        fi
    else
        echo "   $t: ${EXECS[$t]} executions in ${SECONDS_EACH}s"
    fi
done

echo "== fuzzing summary ($MODE, ${SECONDS_EACH}s per target)"
for t in "${TARGETS[@]}"; do
    printf '   %-16s %12s executions\n' "$t" "${EXECS[$t]}"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FUZZING FOUND CRASHES in: ${failed[*]}"
    exit 1
fi
