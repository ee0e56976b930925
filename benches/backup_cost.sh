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
ms() { # NAME CMD...: wall seconds to the millisecond, CPU seconds and peak KB appended
    name=$1; shift
    t0=$(date +%s%N)
    /usr/bin/time -f "%U %S %M" -o .t "$@" >/dev/null 2>.err || { cat .err >&2; exit 1; }
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }' >>"$name.secs"
    awk '{ printf "%.2f\n", $1 + $2 }' .t >>"$name.cpu"
    awk '{ print $3 }' .t >>"$name.kb"
}
if [ "$STEP" -eq 0 ]; then
    "$PS" --store st backup db.db >/dev/null
    exit 0
fi
if [ $((STEP % 2)) -eq 0 ]; then
    ms cat sh -c 'cat db.db $(ls db.db-wal 2>/dev/null) >/dev/null'
    ms changed "$PS" --store st backup db.db
    ms unchanged "$PS" --store st backup db.db
else
    ms changed "$PS" --store st backup db.db
    ms cat sh -c 'cat db.db $(ls db.db-wal 2>/dev/null) >/dev/null'
    ms unchanged "$PS" --store st backup db.db
fi
HOOK
export PS
"$WORK/bin/oltpsteps" db.db "$SIZE" "$STEPS" bash hook.sh

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { paste "$1" "$2" | awk '{ if ($2 > 0) print $1/$2 }' | sort -n | awk '{a[NR]=$1} END {m = (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf "%.1f (%.1f–%.1f)", m, a[1], a[NR]}'; }
mb() { sort -n | tail -1 | awk '{ printf "%d", $1 / 1024 }'; }
echo
echo "Database: $(du -m db.db | cut -f1) MiB (oltp), $STEPS steps, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "| what | wall, median (s) | per pair / cat: median (min–max) | CPU, median (s) | peak RSS (MB) | target |"
echo "|---|---|---|---|---|---|"
echo "| \`cat\` the database and its WAL (reference) | $(median <cat.secs) | | $(median <cat.cpu) | | |"
echo "| backup after a step's changes | $(median <changed.secs) | $(ratio changed.secs cat.secs) | $(median <changed.cpu) | $(mb <changed.kb) | ≤ 3× |"
echo "| backup, unchanged | $(median <unchanged.secs) | $(ratio unchanged.secs cat.secs) | $(median <unchanged.cpu) | $(mb <unchanged.kb) | ≤ 2.5× |"
