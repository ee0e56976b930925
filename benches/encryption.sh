#!/usr/bin/env bash
# Encrypted against plain, same build, one run (issue #28's costs: backup and
# restore of a 1 GiB database ≤ 1.15× the same build without encryption).
#
#   benches/encryption.sh [SIZE_MIB] [STEPS] [RUNS] [WORKDIR]   (defaults: 1024 24 7 a temp dir)
#   benches/encryption.sh 64 6 3                                (a quick check of the script)
#
# benches/deltas.sh with the store under test made by `init --encrypt` (no
# deltas in either store): the same oltp database and steps, both stores backed
# up after every step in alternating order, then RUNS pairs of restores of the
# newest snapshot. Every command on the encrypted store first derives its key
# from the passphrase (Argon2id, tuned to ~0.5 s at `init`): that fixed cost is
# in its times, and measured alone below (`snapshots` of each store, RUNS pairs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${4:-$(mktemp -d /var/tmp/pagesnap-enc.XXXXXX)}
export B=enc B_INIT=--encrypt TARGET=1.15
# A benchmark's throwaway store: the passphrase in the environment is fine here.
export PAGESNAP_PASSWORD="pagesnap benchmark passphrase"
"$HERE/deltas.sh" "${1:-1024}" "${2:-24}" "${3:-7}" "$WORK"
cd "$WORK"
. "$HERE/stats.sh"
rm -f enc.open plain.open
for _ in $(seq "${3:-7}"); do
    /usr/bin/time -f "%e" -o .t bin/pagesnap --store plain snapshots >/dev/null; cat .t >>plain.open
    /usr/bin/time -f "%e" -o .t bin/pagesnap --store enc snapshots >/dev/null; cat .t >>enc.open
done
echo "Opening the store and listing its snapshots (median of ${3:-7}, s): encrypted $(median <enc.open) (the key's Argon2id), plain $(median <plain.open)"
