#!/usr/bin/env bash
# End-to-end demo: builds pagesnap, snapshots a changing sample database several
# times into a store of its own, lists the snapshots, restores one and checks it.
#
# Usage: scripts/demo.sh [WORKDIR]
#
# Everything (database, store, cache) is written into WORKDIR, never into your
# default store or cache: without WORKDIR a temporary directory, removed at the
# end; with WORKDIR, that directory, kept (run it again to add snapshots).
# PAGESNAP_DEMO_STORE=DIR (or s3://BUCKET/PREFIX) puts the store elsewhere.
# ($PAGESNAP_STORE is ignored on purpose: it usually names a real store.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/pagesnap-demo.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi

echo "== building"
cargo build --release --quiet --bin pagesnap --example sampledb
ps=target/release/pagesnap
sample=target/release/examples/sampledb

store=${PAGESNAP_DEMO_STORE:-$work/store}
export PAGESNAP_STORE=$store
# The store's cache (head hints, index cache) goes with the demo too.
export PAGESNAP_CACHE_DIR=$work/cache
echo "== working in $work, store $store"
if ! "$ps" snapshots >/dev/null 2>&1; then
  echo "== creating the store"
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
case $store in
  s3://*) "$ps" stats ;;
  *) du -sh "$store" ;;
esac
