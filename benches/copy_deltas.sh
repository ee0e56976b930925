#!/usr/bin/env bash
# `copy` of a history with deltas: into a store with deltas (deltas copied as
# they are) against into a plain store (every delta stored whole), same build.
#
#   benches/copy_deltas.sh [SIZE_MIB] [STEPS] [ROUNDS] [WORKDIR]   (defaults: 256 60 5 a temp dir)
#
# Makes the stores with benches/deltas.sh SIZE_MIB STEPS 1 WORKDIR (the `oltp`
# database backed up after the build and after each of STEPS 10-minute steps)
# unless WORKDIR already holds them, then copies every snapshot of its store
# with deltas into a fresh `init --deltas` store and into a fresh plain one,
# ROUNDS times, the two interleaved. Prints the medians, the per-pair ratio and
# the pack bytes each destination holds, and checks that both copies restore
# the newest snapshot to the source's image. The default run takes about
# 3 minutes on 2 cores.
set -euo pipefail

SIZE=${1:-256}
STEPS=${2:-60}
ROUNDS=${3:-5}
WORK=${4:-$(mktemp -d /var/tmp/pagesnap-copy.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -d "$WORK/deltas" ]; then
    "$ROOT/benches/deltas.sh" "$SIZE" "$STEPS" 1 "$WORK" >/dev/null
else
    # Stores of an earlier run: this checkout's build copies them.
    (cd "$ROOT" && cargo build --release --quiet --bin pagesnap)
    cp "$ROOT/target/release/pagesnap" "$WORK/bin/"
fi
PS="$WORK/bin/pagesnap"
cd "$WORK"
export PAGESNAP_CACHE_DIR="$WORK/cache"
echo "# workdir $WORK; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%Y-%m-%d %H:%M UTC')" >&2

. "$ROOT/benches/stats.sh"

# one DEST INIT_FLAGS: a fresh store, every snapshot copied into it; appends the seconds.
one() {
    rm -rf "$1"
    # shellcheck disable=SC2086 # the init flags are a list
    "$PS" --store "$1" init $2 >/dev/null
    /usr/bin/time -f "%e" -o .t "$PS" --store deltas copy --to "$1" >/dev/null 2>.err || { cat .err >&2; exit 1; }
    cat .t >>"$1.copy.secs"
}
rm -f to-deltas.copy.secs to-plain.copy.secs
for i in $(seq "$ROUNDS"); do
    if [ $((i % 2)) -eq 1 ]; then one to-deltas --deltas; one to-plain ""; else one to-plain ""; one to-deltas --deltas; fi
done
rm -f ref.db out.db
"$PS" --store deltas restore latest -o ref.db --no-fsync >/dev/null
for s in to-deltas to-plain; do
    "$PS" --store "$s" restore latest -o out.db --no-fsync --force >/dev/null
    cmp ref.db out.db || { echo "copy_deltas.sh: $s restores another image" >&2; exit 1; }
done
rm -f ref.db out.db
d=$(median <to-deltas.copy.secs); p=$(median <to-plain.copy.secs)
echo
echo "Source: $(bytes deltas/packs) pack bytes, $(ls deltas/snapshots | wc -l) snapshots; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| copy of every snapshot | into a store with deltas | into a plain store | ratio of medians | per-pair ratio: median (min–max) |"
echo "|---|---|---|---|---|"
echo "| time (median of $ROUNDS, s) | $d | $p | $(quotient "$d" "$p") | $(pairs to-deltas.copy.secs to-plain.copy.secs) |"
echo "| pack bytes written | $(bytes to-deltas/packs) | $(bytes to-plain/packs) | $(quotient "$(bytes to-deltas/packs)" "$(bytes to-plain/packs)") | |"
