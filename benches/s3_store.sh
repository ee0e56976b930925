# Sourced by the S3 benches (s3_requests.sh, s3_history.sh), with ROOT, WORK
# and SIZE set and the store's name prefix as the argument: reads the env of
# the Garage server of scripts/garage.sh (starting one if there is none),
# builds the release binary and makedb, and makes WORK/db.db of SIZE MiB and an
# empty store. Sets PS, MK, URL and PAGESNAP_CACHE_DIR (WORK/cache), and
# leaves the shell in WORK.
mkdir -p "$WORK"
ENVF="${GARAGE_ENV:-${TMPDIR:-/tmp}/pagesnap-garage/env}"
[ -s "$ENVF" ] || "$ROOT/scripts/garage.sh"
set -a; . "$ENVF"; set +a
(cd "$ROOT" && cargo build --release --quiet --bin pagesnap --example makedb)
PS="$ROOT/target/release/pagesnap"
MK="$ROOT/target/release/examples/makedb"
export PAGESNAP_CACHE_DIR="$WORK/cache"
URL="s3://$PAGESNAP_TEST_BUCKET/$1-$$-$(date +%s)"
cd "$WORK"
"$MK" db.db "$SIZE" >/dev/null
"$PS" --store "$URL" init >/dev/null
