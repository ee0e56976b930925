#!/usr/bin/env bash
# Fuzzes every decoder of the store format (and the b-tree walker of `diff`)
# for SECONDS each (default 60).
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs a nightly toolchain (libFuzzer and AddressSanitizer); installs cargo-fuzz
# if it is missing. Targets live in fuzz/ (their own workspace); each starts from
# the committed seeds in fuzz/seeds/<target>/ and keeps what it learns in
# fuzz/corpus/<target>/ (not committed). Builds keep debug assertions (-a), so an
# integer overflow in a decoder is a crash, as in `cargo test`.
#
# Any crash, out-of-memory or timeout input is copied to
# tests/fixtures/fuzz-regressions/<target>/, where the regression test
# (crates/pagesnap-core/tests/library/fuzz_regressions.rs) replays it on every
# `cargo test`; the script then exits 1. Reproduce one with
#   cargo +nightly fuzz run -a --fuzz-dir fuzz TARGET FILE
set -euo pipefail

secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Largest input per target: above the biggest seed, small enough to stay fast.
declare -A max_len=(
    [config]=4096 [manifest]=4096 [dict]=32768
    [pagemap]=65536 [index]=65536 [envelope]=65536 [pack]=65536
    [cache-chunks]=32768 [cache-map]=8192 [cache-placed]=8192 [base-cache]=8192
    [key-file]=4096 [sealed]=16384 [btree]=65536 [cache-positions]=32768
    [cache-prints]=8192 [cache-sketch]=8192 [cache-listing]=8192 [wal]=16384
)
targets=(config manifest pagemap index dict envelope pack cache-chunks cache-map cache-placed base-cache
    key-file sealed btree cache-positions cache-prints cache-sketch cache-listing wal)

cargo +nightly fuzz build -a --fuzz-dir fuzz

found=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    # Artifacts of earlier runs were copied already; start clean to see new ones.
    rm -rf "fuzz/artifacts/$t"
    echo "== fuzz $t for ${secs}s"
    start=$(date +%s)
    # libFuzzer exits non-zero on a finding; the artifacts below tell which.
    cargo +nightly fuzz run -a --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
        -timeout=10 -print_final_stats=1 2>&1 |
        awk '/ cov: / { last = $0 } /^Done [0-9]+ runs|^stat::(number_of_executed_units|peak_rss_mb)|ERROR|SUMMARY|Test unit written/ { print } END { if (last) print "   last status: " last }' || true
    echo "   took $(($(date +%s) - start))s"
    shopt -s nullglob
    artifacts=(fuzz/artifacts/"$t"/{crash,oom,timeout,leak}-*)
    shopt -u nullglob
    if ((${#artifacts[@]})); then
        mkdir -p "tests/fixtures/fuzz-regressions/$t"
        cp "${artifacts[@]}" "tests/fixtures/fuzz-regressions/$t/"
        echo "   FOUND ${#artifacts[@]}: ${artifacts[*]} -> tests/fixtures/fuzz-regressions/$t/"
        found=1
    fi
done

if ((found)); then
    echo "fuzzing found inputs that break a decoder; see tests/fixtures/fuzz-regressions/"
    exit 1
fi
echo "fuzzing found nothing (${secs}s per target)"
