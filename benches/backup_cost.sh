#!/usr/bin/env bash
# What a backup costs against reading the file (issue #30's first target), one run.
#
#   benches/backup_cost.sh [SIZE_MIB] [STEPS] [WORKDIR]   (defaults: 1024 12 a temp dir)
#   benches/backup_cost.sh 64 4                            (a quick check of the script)
#
# Builds the release binary and the `oltp` database of `pagesnap bench` (WAL,
# 4 KiB pages) of SIZE_MIB through crates/pagesnap-bench/examples/oltpsteps.rs
# and backs it up once. Then, after each of STEPS 10-minute steps (~1.5% of
# pages changed), interleaved in alternating order, warm page cache:
#
#   cat        `cat DB DB-wal > /dev/null` (the reference: reading what a
#              backup must read)
#   changed    `pagesnap backup DB`, the step's changes new
#   unchanged  `pagesnap backup DB` again, nothing changed since
#
# and prints the medians, the per-pair ratios against `cat` (median, min–max)
# and the targets of #30 (≤ 3× after a change, ≤ 2.5× unchanged), with the CPU
# time and peak RSS of the backups (GNU time).
#
# About 6 minutes at the defaults on the 2-core machine (3 to build the database).
set -euo pipefail

SIZE=${1:-1024}
STEPS=${2:-12}
WORK=${3:-$(mktemp -d /var/tmp/pagesnap-backup-cost.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

command -v /usr/bin/time >/dev/null || { echo "backup_cost.sh: GNU time is required (apt install time)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
PS="$WORK/bin/pagesnap"
cd "$WORK"
export PAGESNAP_CACHE_DIR="$WORK/cache"
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(cd "$ROOT" && git rev-parse --short HEAD)" >&2
rm -rf db.db db.db-wal db.db-shm st cache ./*.secs ./*.cpu ./*.kb
"$PS" --store st init >/dev/null

# hook.sh: run by oltpsteps after the build (STEP=0: the first backup) and
# after each step: the three measurements, the order alternating.
cat >hook.sh <<'HOOK'
set -eu
. "$STATS"
if [ "$STEP" -eq 0 ]; then
    "$PS" --store st backup db.db >/dev/null
    exit 0
fi
if [ $((STEP % 2)) -eq 0 ]; then
    timed cat sh -c 'cat db.db $(ls db.db-wal 2>/dev/null) >/dev/null'
    timed changed "$PS" --store st backup db.db
    timed unchanged "$PS" --store st backup db.db
else
    timed changed "$PS" --store st backup db.db
    timed cat sh -c 'cat db.db $(ls db.db-wal 2>/dev/null) >/dev/null'
    timed unchanged "$PS" --store st backup db.db
fi
HOOK
export PS STATS="$ROOT/benches/stats.sh"
"$WORK/bin/oltpsteps" db.db "$SIZE" "$STEPS" bash hook.sh

. "$ROOT/benches/stats.sh"
echo
echo "Database: $(du -m db.db | cut -f1) MiB (oltp), $STEPS steps, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| what | wall, median (s) | per pair / cat: median (min–max) | CPU, median (s) | peak RSS (MB) | target |"
echo "|---|---|---|---|---|---|"
echo "| \`cat\` the database and its WAL (reference) | $(median <cat.secs) | | $(median <cat.cpu) | | |"
echo "| backup after a step's changes | $(median <changed.secs) | $(pairs changed.secs cat.secs 1) | $(median <changed.cpu) | $(peak_mb <changed.kb) | ≤ 3× |"
echo "| backup, unchanged | $(median <unchanged.secs) | $(pairs unchanged.secs cat.secs 1) | $(median <unchanged.cpu) | $(peak_mb <unchanged.kb) | ≤ 2.5× |"
