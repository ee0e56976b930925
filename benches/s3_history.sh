#!/usr/bin/env bash
# Requests of an incremental backup on S3 against the length of the history
# (issue #30: the same, at most 9 besides pack uploads, with 10 and with 5,000
# snapshots in the store), against the Garage server of scripts/garage.sh.
#
#   benches/s3_history.sh [SNAPSHOTS] [SIZE_MIB] [WORKDIR]   (defaults: 5000 4 a temp dir)
#   benches/s3_history.sh 300                                (a quick check of the script)
#
# Builds a SIZE_MIB database (examples/makedb.rs) and backs it up SNAPSHOTS
# times, 1% of its pages changed before each backup, each backup writing its
# own pack, index object, page map and manifest, as a 10-minute schedule does.
# Prints the requests of the backups after the 10th and the last one (a
# backup's `--json` `requests`), with how long each took, and of one more
# backup with this machine's record of the listing deleted: the full listing
# a prune, another machine's backup or the daily schedule costs. About 0.1 s a
# backup on the 2-core machine: ~9 minutes at the defaults.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${1:-5000}"
SIZE="${2:-4}"
WORK="${3:-$(mktemp -d)}"
. "$ROOT/benches/s3_store.sh" history
echo "# workdir $WORK; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(cd "$ROOT" && git rev-parse --short HEAD); $URL" >&2
summary() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
r = d["requests"][0]
meta = r["total"] - r["pack_put"]
print("| %s | %d (get %d, put %d, list %d, delete %d) | %d | %s | %.2f s |" % (
    sys.argv[1], meta, r["get"], r["put"], r["list"], r["delete"], r["pack_put"],
    "yes" if d.get("store_listed", True) else "no", d["duration_secs"]))' "$1"
}
echo "| backup | requests besides packs | pack uploads | listed in full | backup's own time |"
echo "|---|---|---|---|---|"
for i in $(seq 1 "$N"); do
  "$MK" db.db change 1 >/dev/null
  if [ "$i" -eq 11 ] || [ "$i" -eq "$N" ]; then
    "$PS" --json --store "$URL" backup db.db | summary "with $((i - 1)) snapshots in the store"
  else
    "$PS" --store "$URL" backup db.db >/dev/null 2>&1
  fi
done
find "$PAGESNAP_CACHE_DIR" -name listing -delete
"$MK" db.db change 1 >/dev/null
"$PS" --json --store "$URL" backup db.db | summary "the same, this machine's record of the listing deleted"
