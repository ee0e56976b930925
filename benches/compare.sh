#!/usr/bin/env bash
# pagesnap against the tools people use today, in one run on one machine.
#
#   benches/compare.sh [SIZE_MIB] [RUNS] [WORKDIR]      (defaults: 1024 5 a temp dir)
#   HISTORY=0 BIG_MIB=0 benches/compare.sh              (skip the 1,000-snapshot and 2 GiB parts)
#
# Builds the release binary and a database of SIZE_MIB (rows of 500 random and 500
# zero bytes, WAL mode), then times, interleaved and RUNS times each (medians; the
# page cache is warm):
#   backup, 1% of pages changed   vs  sqlite3 DB ".backup copy.db"
#   backup, unchanged             vs  the same
#   first backup, empty store     vs  sqlite3 .backup && zstd -3
#   restore --no-fsync to a file    vs zstd -d -c copy.db.zst > out.db (both through the page cache)
#   restore (the default: durable)  vs the same + sync, and vs zstd -d alone
#   restore --no-fsync              vs zstd -d + b3sum of its output (a reference
#                                      that checks what it restored, as pagesnap does)
# (the restores in alternating order: which tool goes first changes the other's time)
# then the peak RSS of backup and restore of a BIG_MIB (default 2048) database, and
# the backup time of a 64 MiB database with 10 and with 1,000 snapshots in the store.
# Needs sqlite3, zstd and GNU time (apt install sqlite3 zstd time); b3sum is taken
# from PATH or installed into WORKDIR with `cargo install b3sum` (the row is left
# out when neither works).
set -euo pipefail

SIZE=${1:-1024}
RUNS=${2:-5}
WORK=${3:-$(mktemp -d /var/tmp/pagesnap-compare.XXXXXX)}
BIG_MIB=${BIG_MIB:-2048}
HISTORY=${HISTORY:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

for tool in sqlite3 zstd /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is required" >&2; exit 1; }
done
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap --example makedb)
PS="$ROOT/target/release/pagesnap"
MK="$ROOT/target/release/examples/makedb"
mkdir -p "$WORK"
cd "$WORK"
B3=$(command -v b3sum || true)
if [ -z "$B3" ] && cargo install --quiet --locked --root "$WORK/tools" b3sum >&2; then B3="$WORK/tools/bin/b3sum"; fi
[ -n "$B3" ] || echo "# b3sum not found and not installable: the checking reference is left out" >&2
export B3
echo "# workdir $WORK; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')" >&2

# secs CMD...: wall seconds of one run (output discarded).
secs() { /usr/bin/time -f "%e" -o "$WORK/.t" "$@" >/dev/null 2>"$WORK/.err" || { cat "$WORK/.err" >&2; exit 1; }; cat "$WORK/.t"; }
# rss CMD...: peak RSS in MB of one run.
rss() { /usr/bin/time -f "%M" -o "$WORK/.t" "$@" >/dev/null 2>"$WORK/.err" || { cat "$WORK/.err" >&2; exit 1; }; echo $(( $(cat "$WORK/.t") / 1024 )); }
. "$ROOT/benches/stats.sh"
warm() { cat "$1" >/dev/null; }

rm -f db.db db.db-wal db.db-shm   # a reused workdir: start from a new database
"$MK" db.db "$SIZE" >&2
warm db.db
rm -rf store && "$PS" --store store init >/dev/null && "$PS" --store store backup db.db >/dev/null

declare -a REF PCT UNCH FIRST FREF REST RREF SREST SREF CREF
for i in $(seq "$RUNS"); do
    echo "# run $i of $RUNS" >&2
    rm -f copy.db; REF+=("$(secs sqlite3 db.db ".backup copy.db")")
    "$MK" db.db change 1 >/dev/null; warm db.db
    PCT+=("$(secs "$PS" --store store backup db.db)")
    UNCH+=("$(secs "$PS" --store store backup db.db)")
    rm -f copy.db copy.db.zst
    FREF+=("$(secs sh -c 'sqlite3 db.db ".backup copy.db" && zstd -3 -q copy.db -o copy.db.zst')")
    rm -rf first && "$PS" --store first init >/dev/null
    FIRST+=("$(secs "$PS" --store first backup db.db)")
    # Warm page cache for the restores, as for the database: packs are written
    # past the cache (direct writes), and zstd's output went through it.
    warm copy.db.zst; find store -type f -exec cat {} + >/dev/null
    # Which tool goes first alternates: a write into the page cache is slower
    # right after deleting a file the other tool wrote (measured: pagesnap 0.47 s
    # after its own output, 0.61 s after zstd's; zstd 0.39 s after pagesnap's,
    # 0.48 s after its own), so a fixed order favours one of them. (Most of that
    # was the size of pagesnap's writes, since cut to 32 KiB: docs/PERFORMANCE.md,
    # "The size of each write". The order still alternates.)
    ref_nofsync() { rm -f out.db; sync; RREF+=("$(secs sh -c 'zstd -d -q -c copy.db.zst > out.db')"); }
    ps_nofsync() { rm -f out.db; sync; REST+=("$(secs "$PS" --store store restore latest -o out.db --no-fsync)"); }
    ref_sync() { rm -f out.db; sync; SREF+=("$(secs sh -c 'zstd -d -q -c copy.db.zst > out.db && sync out.db')"); }
    ps_sync() { rm -f out.db; sync; SREST+=("$(secs "$PS" --store store restore latest -o out.db)"); }
    # zstd -d, then blake3 of what it wrote, as a restore checks the image it wrote.
    ref_check() { [ -n "$B3" ] || return 0; rm -f out.db; sync; CREF+=("$(secs sh -c 'zstd -d -q -c copy.db.zst > out.db && "$B3" out.db')"); }
    if [ $((i % 2)) -eq 1 ]; then
        ref_nofsync; ps_nofsync; ref_sync; ps_sync; ref_check
    else
        ref_check; ps_nofsync; ref_nofsync; ps_sync; ref_sync
    fi
done
m() { printf '%s\n' "$@" | median; }
ref=$(m "${REF[@]}"); pct=$(m "${PCT[@]}"); unch=$(m "${UNCH[@]}")
fref=$(m "${FREF[@]}"); first=$(m "${FIRST[@]}"); rref=$(m "${RREF[@]}"); rest=$(m "${REST[@]}")
sref=$(m "${SREF[@]}"); srest=$(m "${SREST[@]}")

echo
echo "Database: $(du -m db.db | cut -f1) MiB, $RUNS runs, medians (seconds), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| what | pagesnap | reference | ratio | target |"
echo "|---|---|---|---|---|"
echo "| backup, 1% of pages changed | $pct | $ref (\`sqlite3 .backup\`) | $(quotient "$pct" "$ref") | ≤ 0.7 |"
echo "| backup, unchanged | $unch | $ref (\`sqlite3 .backup\`) | $(quotient "$unch" "$ref") | ≤ 0.6 |"
echo "| first backup, empty store | $first | $fref (\`.backup\` + \`zstd -3\`) | $(quotient "$first" "$fref") | ≤ 0.8 |"
echo "| restore to a file, \`--no-fsync\` (through the page cache, as the reference) | $rest | $rref (\`zstd -d\`) | $(quotient "$rest" "$rref") | ≤ 1.0 |"
echo "| restore to a file, the default (durable: writeback as it goes, fsync) | $srest | $sref (\`zstd -d\` + \`sync\`) | $(quotient "$srest" "$sref") | — |"
echo "| the default (durable) against the non-durable reference | $srest | $rref (\`zstd -d\`) | $(quotient "$srest" "$rref") | — |"
if [ -n "$B3" ]; then
    cref=$(m "${CREF[@]}")
    echo "| restore to a file, \`--no-fsync\`, against a reference that also checks what it restored | $rest | $cref (\`zstd -d\` + \`b3sum\` of the output) | $(quotient "$rest" "$cref") | — |"
fi
echo
echo "Each run (s), in order: restore --no-fsync ${REST[*]}; zstd -d ${RREF[*]}; durable restore ${SREST[*]}; zstd -d + sync ${SREF[*]}${B3:+; zstd -d + b3sum ${CREF[*]}}"

if [ "$BIG_MIB" -gt 0 ]; then
    rm -f big.db big.db-wal big.db-shm
    "$MK" big.db "$BIG_MIB" >&2
    warm big.db
    rm -rf bigstore && "$PS" --store bigstore init >/dev/null
    b1=$(rss "$PS" --store bigstore backup big.db)
    "$MK" big.db change 1 >/dev/null
    b2=$(rss "$PS" --store bigstore backup big.db)
    rm -f bigout.db; r1=$(rss "$PS" --store bigstore restore latest -o bigout.db)
    echo
    echo "Peak RSS, $(du -m big.db | cut -f1) MiB database: first backup $b1 MB, backup after 1% change $b2 MB (target ≤ 150), restore $r1 MB (target ≤ 200)"
    rm -f big.db big.db-wal big.db-shm bigout.db && rm -rf bigstore
fi

if [ "$HISTORY" -gt 0 ]; then
    rm -f hist.db hist.db-wal hist.db-shm
    "$MK" hist.db 64 >&2
    rm -rf hist && "$PS" --store hist init >/dev/null
    at() { # median backup time with the store holding $1 snapshots
        declare -a T=()
        for _ in 1 2 3 4 5; do "$MK" hist.db change 1 >/dev/null; T+=("$(secs "$PS" --store hist backup hist.db)"); done
        m "${T[@]}"
    }
    for _ in $(seq 5); do "$MK" hist.db change 1 >/dev/null; "$PS" --store hist backup hist.db >/dev/null; done
    t10=$(at 10)
    n=$(ls hist/snapshots | wc -l)
    while [ "$n" -lt 995 ]; do "$MK" hist.db change 1 >/dev/null; "$PS" --store hist backup hist.db >/dev/null; n=$((n+1)); done
    t1000=$(at 1000)
    echo
    echo "Backup of a 64 MiB database after a 1% change: $t10 s with 10 snapshots in the store, $t1000 s with 1,000"
fi
