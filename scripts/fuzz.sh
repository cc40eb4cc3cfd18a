#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from the checked-in seed
# corpus (fuzz/corpus/<target>/, copied to a temporary directory so the run adds nothing to the
# repository). Prints one line per target with its executions, then `N passed, M failed`; exits
# non-zero when any target crashed, failed an assertion, timed out or ran out of memory.
#
# Usage: scripts/fuzz.sh [TARGET...]     (default: every target in fuzz/Cargo.toml)
# Env:   FUZZ_SECONDS=10      seconds per target
#        FUZZ_SANITIZER=address   address (default; falls back to none if it cannot build) | none
#        FUZZ_KEEP_CORPUS=DIR  keep each target's grown corpus in DIR/<target>/ (e.g. to merge
#                              new seeds by hand: cargo fuzz cmin)
# Needs: stable Rust; libFuzzer's flags are nightly-only, so RUSTC_BOOTSTRAP=1 is set here.
# Crash inputs land in fuzz/artifacts/<target>/ (ignored by git); reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
SECONDS_PER_TARGET=${FUZZ_SECONDS:-10}
SANITIZER=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! [[ $SECONDS_PER_TARGET =~ ^[0-9]+$ ]] || ((SECONDS_PER_TARGET < 1)); then
    echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_PER_TARGET'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi

all_targets=0
if (($#)); then
    targets=("$@")
else
    all_targets=1
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
if ((${#targets[@]} == 0)); then
    echo "fuzz.sh: no fuzz targets found" >&2
    exit 2
fi

# Release with debug assertions (integer overflow panics too); ASan when it builds.
build_all() {
    if [[ $all_targets == 1 ]]; then
        (cd fuzz && cargo fuzz build --debug-assertions --sanitizer "$1")
        return
    fi
    local t
    for t in "${targets[@]}"; do
        (cd fuzz && cargo fuzz build --debug-assertions --sanitizer "$1" "$t") || return 1
    done
}
echo "==> cargo fuzz build --debug-assertions --sanitizer $SANITIZER (${#targets[@]} targets)"
if ! build_all "$SANITIZER"; then
    if [[ $SANITIZER == none ]]; then
        echo "fuzz.sh: the fuzz targets do not build" >&2
        exit 1
    fi
    echo "fuzz.sh: building with --sanitizer $SANITIZER failed; retrying with --sanitizer none" >&2
    SANITIZER=none
    build_all none || { echo "fuzz.sh: the fuzz targets do not build" >&2; exit 1; }
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir=$ROOT/fuzz/target/$triple/release

work=$(mktemp -d "${TMPDIR:-/tmp}/keyproxy-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# LeakSanitizer stays on (libFuzzer reports leaks as failures); ODR checks trip on Rust statics.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0:allocator_may_return_null=1}

passed=0
failed=0
summary=()
for t in "${targets[@]}"; do
    bin=$bindir/$t
    corpus=$work/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    if [[ -d fuzz/corpus/$t ]]; then
        cp -R "fuzz/corpus/$t/." "$corpus/"
    fi
    seeds=$(find "$corpus" -type f | wc -l)
    log=$work/$t.log
    echo "==> $t: ${SECONDS_PER_TARGET}s from $seeds seeds"
    set +e
    "$bin" "$corpus" \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$ROOT/fuzz/artifacts/$t/" \
        >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    units=$(find "$corpus" -type f | wc -l)
    if [[ $rc == 0 ]]; then
        passed=$((passed + 1))
        line="ok     $t: ${execs:-?} executions in ${SECONDS_PER_TARGET}s, corpus $seeds -> $units"
    else
        failed=$((failed + 1))
        artifact=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
        line="FAILED $t: exit $rc after ${execs:-?} executions${artifact:+, input $artifact}"
        {
            echo "---- $t: what failed ----"
            # The panic message or sanitizer report, then libFuzzer's closing lines.
            grep -m 1 -A 4 -E "panicked at|^==[0-9]+==ERROR|ERROR: libFuzzer" "$log" || true
            echo "..."
            grep -v -E '^ +#[0-9]+ |^ +at |^ +[0-9]+: ' "$log" | tail -n 12
            echo "----"
        } >&2
    fi
    if [[ -n ${FUZZ_KEEP_CORPUS:-} ]]; then
        mkdir -p "$FUZZ_KEEP_CORPUS/$t"
        cp -R "$corpus/." "$FUZZ_KEEP_CORPUS/$t/"
    fi
    echo "$line"
    summary+=("$line")
done

echo "fuzz summary (sanitizer: $SANITIZER, ${SECONDS_PER_TARGET}s per target):"
printf '  %s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
