#!/usr/bin/env bash
# Snapshots queried in place against restoring them, same build, one run (issue #29).
#
#   benches/query.sh [SIZE_MIB] [RUNS] [WORKDIR]    (defaults: 1024 7 a temp dir)
#   benches/query.sh 64 3                           (a quick check of the script)
#   REUSE=1 benches/query.sh 1024 7 WORKDIR         (the timings only, on WORKDIR's store)
#
# Builds the release binary and the `oltp` database of `pagesnap bench` (orders,
# order items, customers; WAL, 4 KiB pages) of SIZE_MIB through
# crates/pagesnap-bench/examples/oltpsteps.rs, backs it up, applies one
# 10-minute step and backs it up again (two snapshots about 1% apart). Then, RUNS
# times, interleaved, warm page cache:
#
#   restore     `restore latest --no-fsync` (the reference)
#   lookup      `sql latest 'SELECT * FROM orders WHERE id = K'`, K random (the
#               snapshot's first two openings are timed apart, once, before)
#   count       `sql latest 'SELECT count(*) FROM orders WHERE total >= 0'`
#               (a scan of the whole orders table), against
#   restore+count  the restore, then the same query on the restored file
#               (python3's sqlite3)
#   diff        `diff A B` of the two snapshots
#
# and prints the medians, the per-pair ratios (median, min–max) against their
# targets, and the chunks a lookup read. With a Garage server
# (scripts/garage.sh start; its env file in $GARAGE_ENV or
# /tmp/pagesnap-garage/env) the store is copied to it and the lookup is repeated
# there, printing the requests it sent (the metadata cache warm, as after a
# first command on that machine).
#
# The default run takes about 10 minutes on the 2-core machine: ~3 minutes to
# build the database, the rest restores. Needs python3.
set -euo pipefail

SIZE=${1:-1024}
RUNS=${2:-7}
WORK=${3:-$(mktemp -d /var/tmp/pagesnap-query.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

command -v python3 >/dev/null || { echo "query.sh: python3 is required" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
PS="$WORK/bin/pagesnap"
cd "$WORK"
export PAGESNAP_CACHE_DIR="$WORK/cache"
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(cd "$ROOT" && git rev-parse --short HEAD)" >&2

if [ "${REUSE:-0}" = 1 ] && [ -d st ]; then
    echo "# reusing the store in $WORK" >&2
else
    rm -rf db.db db.db-wal db.db-shm st cache
    "$PS" --store st init >/dev/null
    cat >hook.sh <<'HOOK'
set -eu
"$PS" --store st backup db.db >/dev/null
HOOK
    export PS
    "$WORK/bin/oltpsteps" db.db "$SIZE" 1 sh hook.sh
fi
A=$("$PS" --store st --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
B=$("$PS" --store st --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
MAXID=$("$PS" --store st sql latest --csv 'SELECT max(id) FROM orders' 2>/dev/null | tail -1)

# secs CMD...: its wall time in seconds, to the millisecond (GNU time's %e
# rounds to 10 ms, a lookup's whole time); stderr kept in .err.
secs() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>.err || { cat .err >&2; exit 1; }
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}
rm -f ./*.secs ./*.chunks
# A snapshot's first opening on a machine resolves it through the store and
# marks it; the second also writes its position file (docs/FORMAT.md, "Local
# position cache"); later ones read it. Both first ones, once, cold:
rm -rf cache/*/positions
secs "$PS" --store st sql latest "SELECT * FROM orders WHERE id = 1" >first.secs
secs "$PS" --store st sql latest "SELECT * FROM orders WHERE id = 2" >second.secs
COUNT_SQL='SELECT count(*) FROM orders WHERE total >= 0'
for run in $(seq 1 "$RUNS"); do
    k=$(( (RANDOM * 32768 + RANDOM) % MAXID + 1 ))
    # Alternate which goes first: the first of a pair warms what the second reads.
    if [ $((run % 2)) -eq 1 ]; then
        secs "$PS" --store st restore latest -o r.db --force --no-fsync >>restore.secs
        secs "$PS" --store st sql latest "SELECT * FROM orders WHERE id = $k" >>lookup.secs
        grep -o 'read [0-9]* chunk' .err | head -1 | tr -dc '0-9\n' >>lookup.chunks
    else
        secs "$PS" --store st sql latest "SELECT * FROM orders WHERE id = $k" >>lookup.secs
        grep -o 'read [0-9]* chunk' .err | head -1 | tr -dc '0-9\n' >>lookup.chunks
        secs "$PS" --store st restore latest -o r.db --force --no-fsync >>restore.secs
    fi
    secs sh -c "\"$PS\" --store st restore latest -o r2.db --force --no-fsync && python3 -c 'import sqlite3; print(sqlite3.connect(\"r2.db\").execute(\"$COUNT_SQL\").fetchone())'" >>restorecount.secs
    secs "$PS" --store st sql latest "$COUNT_SQL" >>count.secs
    secs "$PS" --store st diff "$A" "$B" >>diff.secs
    echo "# run $run of $RUNS" >&2
done
# The counts must agree (in place and on the restored file).
got=$("$PS" --store st sql latest --csv "$COUNT_SQL" 2>/dev/null | tail -1)
want=$(python3 -c "import sqlite3; print(sqlite3.connect('r2.db').execute('$COUNT_SQL').fetchone()[0])")
[ "$got" = "$want" ] || { echo "query.sh: count in place $got, on the restored file $want" >&2; exit 1; }

. "$ROOT/benches/stats.sh"
# ratio FILE_A FILE_B: per-pair ratios a/b as "median (min–max)".
echo
echo "| what | median (s) | per pair: median (min–max) | target |"
echo "|---|---|---|---|"
echo "| restore latest, --no-fsync (reference) | $(median <restore.secs) | | |"
echo "| PK lookup in place, first opening of the snapshot on the machine | $(cat first.secs) | | |"
echo "| the same, second opening (writes the position file) | $(cat second.secs) | | |"
echo "| PK lookup in place (later openings) | $(median <lookup.secs) | $(pairs lookup.secs restore.secs 3) × restore | ≤ 0.05 s and ≤ 0.02× |"
echo "| count(*) scan in place | $(median <count.secs) | $(pairs count.secs restorecount.secs 3) × restore+count | < 1× |"
echo "| restore + count(*) on the file | $(median <restorecount.secs) | | |"
echo "| diff A B (two snapshots ~1% apart) | $(median <diff.secs) | | ≤ 1 s |"
echo
echo "chunks a lookup read: $(median <lookup.chunks) (median of $RUNS)"
echo
"$PS" --store st diff "$A" "$B" 2>&1

ENVF=${GARAGE_ENV:-/tmp/pagesnap-garage/env}
if [ -s "$ENVF" ]; then
    set -a; . "$ENVF"; set +a
    URL="s3://$PAGESNAP_TEST_BUCKET/query-bench-$$"
    "$PS" --store "$URL" init >/dev/null 2>&1
    "$PS" --store st copy --to "$URL" >/dev/null 2>&1
    # The first command on a machine fills the metadata cache; then the lookup.
    "$PS" --store "$URL" sql latest "SELECT 1" >/dev/null 2>&1
    for run in 1 2 3; do
        k=$(( (RANDOM * 32768 + RANDOM) % MAXID + 1 ))
        "$PS" --store "$URL" sql latest "SELECT * FROM orders WHERE id = $k" 2>&1 >/dev/null | grep -E 'requests|read' || true
    done
fi
