#!/usr/bin/env bash
# What a WAL-guided backup costs against a full read and against reading the
# file (issue #30 part 3), one run.
#
#   benches/wal_guided.sh [SIZE_MIB] [ROUNDS] [TXNS] [WORKDIR]   (defaults: 1024 12 60 a temp dir)
#   benches/wal_guided.sh 64 4                                   (a quick check of the script)
#
# Builds the release binary and the `oltp` database of `pagesnap bench` (WAL,
# 4 KiB pages) of SIZE_MIB through crates/pagesnap-bench/examples/oltpsteps.rs.
# An application (python3, below) then keeps a connection open with SQLite's
# default autocheckpoint, and before each backup commits TXNS transactions of
# one order each (an order's row and its index entries: a database written
# about once every 10 seconds, whose WAL stays continuous between backups; see
# benches/wal_continuity.py for how often that holds at other rates). Each
# round, in alternating order, warm page cache:
#
#   cat        `cat DB DB-wal > /dev/null` (the reference of #30)
#   guided     `pagesnap backup DB` after TXNS commits: the WAL followed from
#              the parent's position, only the blocks it names read
#   full       `pagesnap backup --full-read DB` after TXNS commits: every page
#              read (the fingerprints take the unchanged blocks)
#
# and prints the medians, the per-pair ratios (median, min–max), the CPU time,
# peak RSS, and how much of the image each guided backup did not read.
#
# About 5 minutes at the defaults on the 2-core machine (3 to build the database).
set -euo pipefail

SIZE=${1:-1024}
ROUNDS=${2:-12}
TXNS=${3:-60}
WORK=${4:-$(mktemp -d /var/tmp/pagesnap-wal-guided.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

command -v /usr/bin/time >/dev/null || { echo "wal_guided.sh: GNU time is required (apt install time)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "wal_guided.sh: python3 is required" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
PS="$WORK/bin/pagesnap"
cd "$WORK"
export PAGESNAP_CACHE_DIR="$WORK/cache"
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(cd "$ROOT" && git rev-parse --short HEAD)" >&2
rm -rf db.db db.db-wal db.db-shm st cache ./*.secs ./*.cpu ./*.kb unread.txt
"$WORK/bin/oltpsteps" db.db "$SIZE" 0 true
"$PS" --store st init >/dev/null

# The application: one connection, kept open; "w N" commits N one-order
# transactions and answers "ok".
cat >app.py <<'APP'
import random, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA busy_timeout=5000")
top = c.execute("SELECT max(id) FROM orders").fetchone()[0]
rng = random.Random(7)
for line in sys.stdin:
    n = int(line.split()[1])
    for _ in range(n):
        c.execute("UPDATE orders SET total = total + 1, updated_at = ? WHERE id = ?",
                  (int(time.time() * 1000) + rng.randrange(1 << 20), rng.randrange(1, top + 1)))
    print("ok", flush=True)
APP
coproc APP { python3 app.py db.db; }
write() { echo "w $TXNS" >&"${APP[1]}"; read -r _ <&"${APP[0]}"; }

. "$ROOT/benches/stats.sh"
guided() {
    write
    timed guided "$PS" --json --store st backup db.db
    python3 -c 'import json,sys; j=json.load(open(".out")); print(j["unread_bytes"] / j["image_size"] if j["wal_guided"] else -1)' >>unread.txt
}
full() { write; timed full "$PS" --store st backup --full-read db.db; }

# The first backup, and one to start following from (the WAL the first
# write made).
write; "$PS" --store st backup db.db >/dev/null
write; "$PS" --store st backup db.db >/dev/null
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 0 ]; then
        timed cat sh -c 'cat db.db db.db-wal >/dev/null'; guided; full
    else
        full; guided; timed cat sh -c 'cat db.db db.db-wal >/dev/null'
    fi
done
exec {APP[1]}>&-
wait

guided_n=$(awk '$1 >= 0' unread.txt | wc -l)
echo
echo "Database: $(du -m db.db | cut -f1) MiB (oltp), $ROUNDS rounds of $TXNS one-order commits, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "Guided backups: $guided_n of $ROUNDS; share of the image not read, median: $(awk '$1 >= 0' unread.txt | median)"
echo
echo "| what | wall, median (s) | per pair / cat: median (min–max) | per pair / full read | CPU, median (s) | peak RSS (MB) |"
echo "|---|---|---|---|---|---|"
echo "| \`cat\` the database and its WAL (reference) | $(median <cat.secs) | | | $(median <cat.cpu) | |"
echo "| backup, every page read (\`--full-read\`) | $(median <full.secs) | $(pairs full.secs cat.secs) | | $(median <full.cpu) | $(peak_mb <full.kb) |"
echo "| backup, WAL-guided | $(median <guided.secs) | $(pairs guided.secs cat.secs) | $(pairs guided.secs full.secs) | $(median <guided.cpu) | $(peak_mb <guided.kb) |"
