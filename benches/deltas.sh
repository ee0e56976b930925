#!/usr/bin/env bash
# Deltas against no deltas, same build, one run (issue #27's speed targets).
#
#   benches/deltas.sh [SIZE_MIB] [STEPS] [RUNS] [WORKDIR]   (defaults: 1024 144 7 a temp dir)
#   benches/deltas.sh 64 20 5                               (a quick check of the script)
#   REUSE=1 benches/deltas.sh 1024 144 7 WORKDIR            (the restores only, on WORKDIR's stores)
#
# Builds the release binary and the `oltp` database of `pagesnap bench` (orders,
# items, customers; updates skewed to a hot set; WAL mode, 4 KiB pages) of
# SIZE_MIB, through crates/pagesnap-bench/examples/oltpsteps.rs. After the build
# and after each of STEPS 10-minute steps it backs the database up into two
# stores, `init --deltas` and a plain `init`, the order alternating from step to
# step, and times each backup (wall time and peak RSS, GNU time). Then it
# restores the newest snapshot from each store to a file RUNS times, the stores
# in alternating order, `--no-fsync` and the default (durable), warm page cache.
# Prints the medians, the ratio deltas/plain of the medians and the spread of the
# per-pair ratios (min–max), peak RSS, and the bytes each store holds.
#
# The default run (1 GiB, 144 steps, 7 restore pairs) took 18 minutes on the
# 2-core machine shared with other builds (load 5-8): ~4 minutes to build the
# database, ~4.5 s per step (the step's work and two backups), ~3 minutes of
# restores. The quick check (64 MiB, 20 steps, 5 pairs) takes about a minute.
# Needs GNU time (apt install time).
#
# The store under test is `init $B_INIT` named $B (defaults: `--deltas`, deltas;
# benches/encryption.sh runs this script with `--encrypt`), against a plain `init`.
set -euo pipefail

B=${B:-deltas}
B_INIT=${B_INIT:---deltas}
TARGET=${TARGET:-1.2}
SIZE=${1:-1024}
STEPS=${2:-144}
RUNS=${3:-7}
WORK=${4:-$(mktemp -d /var/tmp/pagesnap-$B.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

command -v /usr/bin/time >/dev/null || { echo "deltas.sh: GNU time is required (apt install time)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
# Copies: a build during the run (another checkout's, or this one's) changes nothing.
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
PS="$WORK/bin/pagesnap"
STEPPER="$WORK/bin/oltpsteps"
cd "$WORK"
# The stores' cache folders (derived index, head hints) live in the workdir.
export PAGESNAP_CACHE_DIR="$WORK/cache"
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')" >&2

rm -f ./*.nofsync ./*.durable ./*.bk.secs ./*.kb ./*.nofsync.secs ./*.durable.secs   # a reused workdir
if [ "${REUSE:-0}" = 1 ] && [ -s "$B.backups" ] && [ -s plain.backups ]; then
    # REUSE=1: the stores and backup times of an earlier run in WORKDIR (to
    # measure restores of another build on the same stores).
    echo "# reusing the stores and backup times in $WORK" >&2
else
rm -rf db.db db.db-wal db.db-shm plain "$B" cache ./*.backups
"$PS" --store plain init >/dev/null
# shellcheck disable=SC2086 # B_INIT is a list of flags
"$PS" --store "$B" init $B_INIT >/dev/null

# hook.sh: run by oltpsteps after the build (STEP=0) and after each step: both
# backups, the order alternating; one line "STEP SECONDS PEAK_KB" per backup.
cat >hook.sh <<'HOOK'
set -eu
one() {
    /usr/bin/time -f "%e %M" -o .t "$PS" --store "$1" backup db.db >/dev/null 2>.err || { cat .err >&2; exit 1; }
    echo "$STEP $(cat .t)" >>"$1.backups"
}
if [ $((STEP % 2)) -eq 0 ]; then one plain; one "$B"; else one "$B"; one plain; fi
[ $((STEP % 12)) -ne 0 ] || echo "# step $STEP of $STEPS" >&2
HOOK
export PS STEPS B
started=$(date +%s)
"$STEPPER" db.db "$SIZE" "$STEPS" sh hook.sh
echo $(( $(date +%s) - started )) >steps.secs
fi
steps_secs=$(cat steps.secs)

. "$ROOT/benches/stats.sh"

# The backups after the first (step 0 is the first backup of an empty store).
for s in plain "$B"; do
    awk '$1 > 0 {print $2}' "$s.backups" >"$s.bk.secs"
    awk '$1 > 0 {print $3}' "$s.backups" >"$s.bk.kb"
done
bk_plain=$(median <plain.bk.secs); bk_deltas=$(median <"$B.bk.secs")

# Restores of the newest snapshot, warm page cache (packs read once before).
find plain "$B" -type f -exec cat {} + >/dev/null
rest() { # STORE MODE(nofsync|durable): appends "SECONDS PEAK_KB" to STORE.MODE
    local flag=""; [ "$2" = nofsync ] && flag="--no-fsync"
    rm -f out.db; sync
    /usr/bin/time -f "%e %M" -o .t "$PS" --store "$1" restore latest -o out.db $flag >/dev/null 2>.err || { cat .err >&2; exit 1; }
    cat .t >>"$1.$2"
}
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) -eq 1 ]; then
        rest plain nofsync; rest "$B" nofsync; rest plain durable; rest "$B" durable
    else
        rest "$B" nofsync; rest plain nofsync; rest "$B" durable; rest plain durable
    fi
done
# Both stores restore the same image.
rm -f out2.db
"$PS" --store plain restore latest -o out.db --no-fsync --force >/dev/null
"$PS" --store "$B" restore latest -o out2.db --no-fsync >/dev/null
cmp out.db out2.db || { echo "deltas.sh: the stores restore different images" >&2; exit 1; }
rm -f out.db out2.db
for s in plain "$B"; do for mode in nofsync durable; do
    cut -d' ' -f1 "$s.$mode" >"$s.$mode.secs"; cut -d' ' -f2 "$s.$mode" >"$s.$mode.kb"
done; done

echo
echo "Database: $(du -m db.db | cut -f1) MiB (oltp), $STEPS steps after the first backup, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u '+%Y-%m-%d %H:%M UTC'); steps and backups took ${steps_secs} s"
echo
echo "| what | $B | plain | ratio of medians | per-pair ratio: median (min–max) | target |"
echo "|---|---|---|---|---|---|"
echo "| backup (median of $STEPS steps, s) | $bk_deltas | $bk_plain | $(quotient "$bk_deltas" "$bk_plain") | $(pairs "$B.bk.secs" plain.bk.secs) | ≤ $TARGET |"
for mode in nofsync durable; do
    d=$(median <"$B.$mode.secs"); p=$(median <"plain.$mode.secs")
    label="restore newest, --no-fsync"; [ "$mode" = durable ] && label="restore newest, the default (durable)"
    echo "| $label (median of $RUNS, s) | $d | $p | $(quotient "$d" "$p") | $(pairs "$B.$mode.secs" "plain.$mode.secs") | ≤ $TARGET |"
done
echo "| peak RSS, backup (max over the steps, MB) | $(peak_mb <"$B.bk.kb") | $(peak_mb <plain.bk.kb) | | | |"
echo "| peak RSS, restore (max, MB) | $(cat "$B.nofsync.kb" "$B.durable.kb" | peak_mb) | $(cat plain.nofsync.kb plain.durable.kb | peak_mb) | | | |"
echo "| stored bytes (the whole store) | $(bytes "$B") | $(bytes plain) | $(quotient "$(bytes "$B")" "$(bytes plain)") | | |"
echo
echo "Restores (s), in order: $B --no-fsync $(paste -sd' ' "$B.nofsync.secs"); plain --no-fsync $(paste -sd' ' plain.nofsync.secs); $B durable $(paste -sd' ' "$B.durable.secs"); plain durable $(paste -sd' ' plain.durable.secs)"
echo "First backup (s): $B $(awk '$1 == 0 {print $2}' "$B.backups"), plain $(awk '$1 == 0 {print $2}' plain.backups)"
