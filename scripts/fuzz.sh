#!/usr/bin/env bash
# Fuzzes the parsers of outside input with cargo-fuzz (libFuzzer): `cookie` (session_id on
# Cookie headers), `update` (take_update on backend response headers), `config`
# (Settings::from_yaml), `sealed` (opening sealed values as anyone with Redis access could
# write them).
# See fuzz/fuzz_targets/*.rs for what each one asserts.
#
# Each target starts from its committed seeds (fuzz/seeds/<target>/, read-only) and grows a
# scratch corpus in fuzz/corpus/<target>/ (gitignored, kept between runs). A crash, panic,
# failed assertion, leak or timeout fails the script; libFuzzer leaves the input in
# fuzz/artifacts/<target>/ and prints how to reproduce it.
#
# Works on a stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=address), so
# off nightly this script sets RUSTC_BOOTSTRAP=1. Not run in CI.
#
# Usage: scripts/fuzz.sh [target...]      (default: cookie update config sealed)
#   env: FUZZ_SECONDS=60 (per target)  FUZZ_SANITIZER=address (or none)

set -euo pipefail

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-address}

cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cookie update config sealed)

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    dict=()
    [ -f "$target.dict" ] && dict=("-dict=$target.dict")
    echo "fuzz.sh: $target for ${FUZZ_SECONDS}s" >&2
    # cargo-fuzz's default build: optimised, with debug assertions and overflow checks (`-O`
    # would turn those off). The first corpus directory is where new inputs go; the seeds are
    # only read.
    nice -n 19 cargo fuzz run --sanitizer "$FUZZ_SANITIZER" \
        "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 ${dict[@]+"${dict[@]}"}
done
echo "fuzz.sh: no crash in ${targets[*]}" >&2
