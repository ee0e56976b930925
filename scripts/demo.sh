#!/usr/bin/env bash
# End-to-end demo: builds pagesnap, snapshots a changing sample database several
# times into the default store, lists the snapshots, restores one and checks it.
# Usage: scripts/demo.sh [WORKDIR]   (default: ./pagesnap-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-pagesnap-demo}
mkdir -p "$work"

echo "== building"
cargo build --release --quiet --bin pagesnap --example sampledb
ps=target/release/pagesnap
sample=target/release/examples/sampledb

store=${PAGESNAP_STORE:-${XDG_DATA_HOME:-$HOME/.local/share}/pagesnap/store}
if [ ! -f "$store/config" ]; then
  echo "== creating the default store at $store"
  "$ps" init
fi

db="$work/shop.db"
for round in 1 2 3 4; do
  echo "== round $round: change the database, then snapshot it"
  "$sample" change "$db"
  "$ps" backup "$db" --tag demo
done

echo "== snapshots"
"$ps" snapshots --name shop

echo "== restore the newest snapshot"
rm -f "$work/restored.db"
"$ps" restore latest --name shop -o "$work/restored.db"
"$sample" check "$work/restored.db"
ls -l "$db" "$work/restored.db"
du -sh "$store"
