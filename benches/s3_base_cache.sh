#!/usr/bin/env bash
# Backups to an S3 store with deltas, bases from this machine's base cache
# (store/base_cache.rs) against `--base-cache 0` (no cache, no deltas), same
# build, against the Garage server of scripts/garage.sh.
#
#   benches/s3_base_cache.sh [SIZE_MIB] [STEPS] [WORKDIR]   (defaults: 256 12 a temp dir)
#
# Builds the `oltp` database of `pagesnap bench` (crates/pagesnap-bench/examples/
# oltpsteps.rs) and, after the build and after each of STEPS 10-minute steps,
# backs it up into two S3 stores made with `init --deltas`, one with the base
# cache (default bound, 64 MiB) and one with `--base-cache 0`, the order
# alternating. Prints the medians of the backups after a step, the per-pair
# ratio and the bytes each stored per step. The default run takes about a minute.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SIZE="${1:-256}"
STEPS="${2:-12}"
WORK="${3:-$(mktemp -d /var/tmp/pagesnap-s3bc.XXXXXX)}"
mkdir -p "$WORK"
ENVF="${GARAGE_ENV:-${TMPDIR:-/tmp}/pagesnap-garage/env}"
[ -s "$ENVF" ] || "$ROOT/scripts/garage.sh"
set -a; . "$ENVF"; set +a
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
cd "$WORK"
rm -rf db.db db.db-wal db.db-shm cache-* ./*.secs ./*.bytes
T=$(date +%s)
export PS="$WORK/bin/pagesnap" WITH="s3://$PAGESNAP_TEST_BUCKET/s3bc-with-$T" WITHOUT="s3://$PAGESNAP_TEST_BUCKET/s3bc-without-$T"
"$PS" --store "$WITH" init --deltas >/dev/null
"$PS" --store "$WITHOUT" init --deltas >/dev/null
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')" >&2

# hook.sh: both backups after each step (STEP 0: the first), the order alternating.
cat >hook.sh <<'HOOK'
set -eu
one() { # NAME URL [FLAGS]: appends "STEP SECONDS" and "STEP BYTES_ADDED"
    s=$(date +%s.%N)
    PAGESNAP_CACHE_DIR="$PWD/cache-$1" "$PS" --store "$2" --json backup db.db ${3:-} >"$1.json"
    e=$(date +%s.%N)
    echo "$STEP $(echo "$e - $s" | bc)" >>"$1.secs"
    echo "$STEP $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_added"])' "$1.json")" >>"$1.bytes"
}
if [ $((STEP % 2)) -eq 0 ]; then one with "$WITH"; one without "$WITHOUT" "--base-cache 0"
else one without "$WITHOUT" "--base-cache 0"; one with "$WITH"; fi
HOOK
"$WORK/bin/oltpsteps" db.db "$SIZE" "$STEPS" sh hook.sh >/dev/null 2>&1

. "$ROOT/benches/stats.sh"
after() { awk '$1 > 0 {print $2}' "$1"; }
first() { awk '$1 == 0 {print $2}' "$1"; }
spread() { pairs <(after "$1") <(after "$2"); }
echo
echo "Database: $(du -m db.db | cut -f1) MiB (oltp), $STEPS steps, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| backup to S3 with deltas | with the base cache | \`--base-cache 0\` | per pair: median (min–max) |"
echo "|---|--:|--:|--:|"
echo "| first backup (s) | $(first with.secs) | $(first without.secs) | |"
echo "| after a step, median of $STEPS (s) | $(after with.secs | median) | $(after without.secs | median) | $(spread with.secs without.secs) |"
echo "| bytes added after a step, median | $(after with.bytes | median) | $(after without.bytes | median) | $(spread with.bytes without.bytes) |"
