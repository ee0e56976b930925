#!/usr/bin/env bash
# The same backups again, into fresh copies of the stores: how a backup with
# deltas compares with a plain one (and, with OTHER, with another build) on
# identical inputs, which benches/deltas.sh (one backup per step) cannot repeat.
#
#   benches/backup_steps.sh [SIZE_MIB] [STEPS] [ROUNDS] [WORKDIR]   (defaults: 1024 144 4 a temp dir)
#   OTHER=/path/to/pagesnap benches/backup_steps.sh ...              (also that build, on the deltas store)
#   REUSE=1 benches/backup_steps.sh 1024 144 4 WORKDIR               (the rounds only, on WORKDIR's copies)
#
# Builds the `oltp` database of SIZE_MIB (crates/pagesnap-bench/examples/oltpsteps.rs)
# and backs it up after the build and each of STEPS steps into a plain store and
# one made with `init --deltas`, as deltas.sh does. It keeps copies of both
# stores (and their cache folder) after step STEPS-8 and of the database after
# each of the last 8 steps. Then, ROUNDS times: fresh copies of the stores, and
# those 8 backups into each, the stores' order rotating from step to step.
# Prints each configuration's median wall and CPU seconds, its peak RSS, and
# its per-pair ratio to the plain store's (median, min–max). PERFORMANCE.md
# ("Small deltas without the whole frames") used it. The default run took
# ~10 minutes on the 2-core machine; `64 20 2` is a quick check of the script.
# Needs GNU time (apt install time).
set -euo pipefail

SIZE=${1:-1024}
STEPS=${2:-144}
ROUNDS=${3:-4}
WORK=${4:-$(mktemp -d /var/tmp/pagesnap-steps.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ "$STEPS" -ge 9 ] || { echo "backup_steps.sh: STEPS must be at least 9" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "backup_steps.sh: GNU time is required (apt install time)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap && cargo build --release --quiet -p pagesnap-bench --example oltpsteps)
mkdir -p "$WORK/bin"
cp "$ROOT/target/release/pagesnap" "$ROOT/target/release/examples/oltpsteps" "$WORK/bin/"
cd "$WORK"
FIRST=$((STEPS - 7))
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')" >&2

if [ "${REUSE:-0}" != 1 ] || [ ! -d saved/deltas ]; then
    rm -rf db.db db.db-wal db.db-shm plain deltas cache saved
    export PAGESNAP_CACHE_DIR="$WORK/cache" PS="$WORK/bin/pagesnap" FIRST
    "$PS" --store plain init >/dev/null
    "$PS" --store deltas init --deltas >/dev/null
    # hook.sh: both backups after each step; the copies the rounds start from.
    cat >hook.sh <<'HOOK'
set -eu
"$PS" --store plain backup db.db >/dev/null
"$PS" --store deltas backup db.db >/dev/null
if [ "$STEP" -eq $((FIRST - 1)) ]; then mkdir -p saved; cp -a plain deltas cache saved/; fi
if [ "$STEP" -ge "$FIRST" ]; then mkdir -p "saved/db$STEP"; cp db.db* "saved/db$STEP/"; fi
HOOK
    "$WORK/bin/oltpsteps" db.db "$SIZE" "$STEPS" sh hook.sh
fi

. "$ROOT/benches/stats.sh"

# Configurations: NAME BINARY STORE.
configs=("plain $WORK/bin/pagesnap plain" "deltas $WORK/bin/pagesnap deltas")
[ -z "${OTHER:-}" ] || configs+=("other $OTHER deltas")
n=${#configs[@]}
rm -rf run; mkdir run
for name in plain deltas other; do rm -f "$name.secs" "$name.cpu" "$name.kb"; done
for round in $(seq "$ROUNDS"); do
    for c in "${configs[@]}"; do
        read -r name _ store <<<"$c"
        rm -rf "run/$name"; mkdir -p "run/$name"
        cp -a "saved/$store" "run/$name/store"; cp -a saved/cache "run/$name/cache"
    done
    for step in $(seq "$FIRST" "$STEPS"); do
        for i in $(seq 0 $((n - 1))); do
            read -r name bin _ <<<"${configs[$(((i + step + round) % n))]}"
            # A fresh copy of the database for each: a backup's last connection
            # checkpoints the WAL when it closes.
            rm -f run/db.db*; cp "saved/db$step/"db.db* run/
            (cd run && export PAGESNAP_CACHE_DIR="$WORK/run/$name/cache" &&
                timed "../$name" "$bin" --store "$name/store" backup db.db)
        done
    done
done

echo
echo "Database: $(du -m saved/db"$STEPS"/db.db | cut -f1) MiB (oltp), steps $FIRST–$STEPS of $STEPS, $ROUNDS rounds, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| store | wall (median, s) | CPU (median, s) | peak RSS (MB) | wall ÷ plain, per pair | CPU ÷ plain, per pair |"
echo "|---|---|---|---|---|---|"
for c in "${configs[@]}"; do
    read -r name _ _ <<<"$c"
    ratio="| |"
    [ "$name" = plain ] || ratio="| $(pairs "$name.secs" plain.secs) | $(pairs "$name.cpu" plain.cpu) |"
    echo "| $name | $(median <"$name.secs") | $(median <"$name.cpu") | $(peak_mb <"$name.kb") $ratio"
done
