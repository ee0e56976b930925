#!/usr/bin/env bash
# Requests a backup sends to an S3 store (issue #8: at most 10 besides its pack
# uploads for a 1 GiB database with 1% of pages changed), against the Garage
# server of scripts/garage.sh.
#
#   benches/s3_requests.sh [SIZE_MIB] [WORKDIR]     (default 1024 MiB, a temp dir)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE="${1:-1024}"
WORK="${2:-$(mktemp -d)}"
. "$ROOT/benches/s3_store.sh" requests
summary() {
  python3 -c '
import json, sys
d = json.load(sys.stdin)
r = d["requests"][0]
meta = r["total"] - r["pack_put"]
print("%s: %d requests besides %d pack uploads (get %d, put %d, list %d, head %d, delete %d; %d reads from the cache), %d new chunks, %.1f MiB added" % (
    sys.argv[1], meta, r["pack_put"], r["get"], r["put"], r["list"], r["head"], r["delete"],
    r["cached"], d["new_chunks"], d["bytes_added"] / 2**20))' "$1"
}
"$PS" --json --store "$URL" backup db.db | summary "first backup ($SIZE MiB)"
for i in 1 2 3; do
  "$MK" db.db change 1 >/dev/null
  "$PS" --json --store "$URL" backup db.db | summary "backup after a 1% change ($i)"
done
rm -rf "$WORK/cache"
"$MK" db.db change 1 >/dev/null
"$PS" --json --store "$URL" backup db.db | summary "the same on a machine without the cache"
"$MK" db.db change 1 >/dev/null
"$PS" --json --store "$URL" backup db.db | summary "and the backup after it"
