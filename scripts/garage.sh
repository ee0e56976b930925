#!/usr/bin/env bash
# A single-node Garage (S3-compatible object store) on 127.0.0.1 for the S3 tests.
#
#   scripts/garage.sh [start]   install garage if missing, start a server (or reuse
#                               the one this script started before), create the
#                               bucket and key, write the env file
#   scripts/garage.sh stop      stop the server this script started
#   scripts/garage.sh restart   start the server again on its existing data (after
#                               it was killed: the crash test of tests/integration/s3.rs)
#
# The env file ($GARAGE_ENV, default $GARAGE_DIR/env) holds KEY=VALUE lines:
# AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
# PAGESNAP_TEST_BUCKET. tests/integration/s3.rs reads it (same default path).
# Installing garage from crates.io takes ~6 minutes on 2 cores; it is skipped
# when `garage` is already on PATH (or in ~/.cargo/bin).
set -euo pipefail

GARAGE_DIR="${GARAGE_DIR:-${TMPDIR:-/tmp}/pagesnap-garage}"
GARAGE_ENV="${GARAGE_ENV:-$GARAGE_DIR/env}"
S3_PORT="${GARAGE_S3_PORT:-3900}"
RPC_PORT="${GARAGE_RPC_PORT:-3901}"
BUCKET=pagesnap-test
KEY_NAME=pagesnap-test-key
CONF="$GARAGE_DIR/garage.toml"
PIDFILE="$GARAGE_DIR/garage.pid"

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

log() { echo "garage.sh: $*" >&2; }

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

stop() {
  if running; then
    local pid
    pid="$(cat "$PIDFILE")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "stopped garage (pid $pid)"
  fi
  rm -f "$PIDFILE" "$GARAGE_ENV"
}

install() {
  if command -v garage >/dev/null 2>&1; then
    return
  fi
  log "installing garage from crates.io (about 6 minutes on 2 cores)"
  local t0=$SECONDS
  cargo install garage --locked --no-default-features --features sqlite,bundled-libs
  log "garage installed in $((SECONDS - t0)) s"
}

g() { garage -c "$CONF" "$@"; }

start() {
  install
  if running && [ -s "$GARAGE_ENV" ]; then
    log "reusing the running server (pid $(cat "$PIDFILE")); env in $GARAGE_ENV"
    return
  fi
  stop
  rm -rf "$GARAGE_DIR"
  mkdir -p "$GARAGE_DIR/meta" "$GARAGE_DIR/data"
  local secret
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cat >"$CONF" <<EOF
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
EOF
  garage -c "$CONF" server >"$GARAGE_DIR/server.log" 2>&1 &
  echo $! >"$PIDFILE"
  # Wait for the RPC to answer (`node id` reads the local key and answers at
  # once; `status` needs the server).
  local up=""
  for _ in $(seq 150); do
    if g status >/dev/null 2>&1; then up=1; break; fi
    running || { cat "$GARAGE_DIR/server.log" >&2; log "garage server exited"; exit 1; }
    sleep 0.2
  done
  [ -n "$up" ] || { cat "$GARAGE_DIR/server.log" >&2; log "garage did not answer"; exit 1; }
  local node
  node="$(g node id -q)"
  node="${node%%@*}"
  g layout assign -z dc1 -c 1G "$node" >/dev/null
  g layout apply --version 1 >/dev/null
  g bucket create "$BUCKET" >/dev/null
  local out key_id key_secret
  out="$(g key create "$KEY_NAME")"
  key_id="$(printf '%s\n' "$out" | sed -n 's/^Key ID:[[:space:]]*//p' | head -n1)"
  key_secret="$(printf '%s\n' "$out" | sed -n 's/^Secret key:[[:space:]]*//p' | head -n1)"
  if [ -z "$key_id" ] || [ -z "$key_secret" ]; then
    printf '%s\n' "$out" >&2
    log "could not read the key id and secret from \`garage key create\`"
    exit 1
  fi
  g bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null
  # Wait until the S3 API serves requests (the layout takes a moment to apply).
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then break; fi
    sleep 0.2
  done
  mkdir -p "$(dirname "$GARAGE_ENV")"
  cat >"$GARAGE_ENV.tmp" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
AWS_REGION=garage
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$key_secret
PAGESNAP_TEST_BUCKET=$BUCKET
EOF
  mv "$GARAGE_ENV.tmp" "$GARAGE_ENV"
  log "garage $(garage --version 2>/dev/null | head -n1) on 127.0.0.1:$S3_PORT (pid $(cat "$PIDFILE")); env in $GARAGE_ENV"
}

wait_up() {
  for _ in $(seq 150); do
    if g status >/dev/null 2>&1; then break; fi
    running || { cat "$GARAGE_DIR/server.log" >&2; log "garage server exited"; exit 1; }
    sleep 0.2
  done
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then return; fi
    sleep 0.2
  done
  log "garage does not answer on 127.0.0.1:$S3_PORT"
  exit 1
}

restart() {
  [ -f "$CONF" ] || { log "no server to restart in $GARAGE_DIR"; exit 1; }
  if running; then return; fi
  garage -c "$CONF" server >>"$GARAGE_DIR/server.log" 2>&1 &
  echo $! >"$PIDFILE"
  wait_up
  log "garage restarted on its data (pid $(cat "$PIDFILE"))"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  *) echo "usage: $0 [start|stop|restart]" >&2; exit 2 ;;
esac
