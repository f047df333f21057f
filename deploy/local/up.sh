#!/usr/bin/env bash
# Starts Surplus on this machine: a private PostgreSQL (data under .surplus/ in the
# project folder, loopback only, never as root), migrations, surplus-control,
# surplus-billing and N simulated GPU workers. Writes .surplus/local.env for the CLI.
# Running it again starts only what is not running.
#
#   deploy/local/up.sh [--workers N] [--gpus-per-worker G] [--notice-ms MS]
#
# Environment: SURPLUS_LOCAL_ROUND_MS (scheduling round, 500), SURPLUS_LOCAL_IDLE_WINDOW_MS
# (owner-idle window before a GPU is offered, 0), SURPLUS_LOCAL_MIN_RUNTIME_MS (how long a
# spot job runs before it can be outbid, 0, so the demo shows an outbid at once; a
# production control plane's default is a minute), SURPLUS_LOCAL_JOB_CGROUPS (auto gives
# exec jobs their own cgroups where this host allows; off by default, so the demo leaves
# the host's cgroup tree alone).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source scripts/env.sh

WORKERS=2
GPUS=8
NOTICE_MS=${SURPLUS_LOCAL_NOTICE_MS:-10000}
while (($#)); do
  case "$1" in
    --workers) WORKERS="$2"; shift 2 ;;
    --gpus-per-worker) GPUS="$2"; shift 2 ;;
    --notice-ms) NOTICE_MS="$2"; shift 2 ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

BIN="$ROOT/${SURPLUS_BUILD_DIR:-build}"
for b in src/control/surplus-control billing/service/surplus-billing gpu_worker/surplus-worker src/cli/surplus; do
  [ -x "$BIN/$b" ] || { echo "up.sh: $BIN/$b is missing: build first (scripts/build.sh)" >&2; exit 1; }
done
STATE="$ROOT/.surplus"
PG_PORT=${SURPLUS_LOCAL_PG_PORT:-55432}
GRPC=${SURPLUS_LOCAL_GRPC:-127.0.0.1:50051}
BILLING=${SURPLUS_LOCAL_BILLING:-127.0.0.1:50052}
HTTP=${SURPLUS_LOCAL_HTTP:-127.0.0.1:8080}
DB_URL="postgresql://surplus@127.0.0.1:$PG_PORT/surplus"
mkdir -p "$STATE/logs" "$STATE/run"

alive() { [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }
start() {  # name, command...
  local name="$1"; shift
  if alive "$name"; then echo "  $name already running (pid $(cat "$STATE/run/$name.pid"))"; return; fi
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/run/$name.pid"
  echo "  started $name (pid $!, log .surplus/logs/$name.log)"
}

# --- PostgreSQL --------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  # The server refuses to run as root: it runs as `postgres`, which must reach its folder.
  d="$STATE"
  while [ "$d" != "/" ]; do
    runuser -u postgres -- test -x "$d" 2>/dev/null || chmod o+x "$d"
    d="$(dirname "$d")"
  done
  mkdir -p "$STATE/pg"
  chown postgres "$STATE/pg"
fi
if [ ! -f "$STATE/pg/data/PG_VERSION" ]; then
  echo "creating the database cluster in .surplus/pg"
  as_owner initdb -D "$STATE/pg/data" -A trust -U surplus -E UTF8 >"$STATE/logs/initdb.log" 2>&1
fi
if as_owner pg_ctl -D "$STATE/pg/data" status >/dev/null 2>&1; then
  echo "  postgresql already running on 127.0.0.1:$PG_PORT"
else
  if ! as_owner pg_ctl -D "$STATE/pg/data" -l "$STATE/pg/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$STATE/pg" start >/dev/null; then
    echo "up.sh: PostgreSQL did not start (port $PG_PORT taken? set SURPLUS_LOCAL_PG_PORT):" >&2
    tail -n 5 "$STATE/pg/server.log" >&2
    exit 1
  fi
  echo "  started postgresql on 127.0.0.1:$PG_PORT"
fi
psql "postgresql://surplus@127.0.0.1:$PG_PORT/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname='surplus'" | grep -q 1 ||
  psql "postgresql://surplus@127.0.0.1:$PG_PORT/postgres" -qc "CREATE DATABASE surplus"
"$BIN/src/control/surplus-control" migrate --database-url "$DB_URL" --log-level warn

# --- services ------------------------------------------------------------------------
start control "$BIN/src/control/surplus-control" serve --database-url "$DB_URL" --listen "$GRPC" \
  --http-listen "$HTTP" --operator-key-file "$STATE/operator.key" --preemption-notice-ms "$NOTICE_MS" \
  --round-ms "${SURPLUS_LOCAL_ROUND_MS:-500}" --owner-idle-window-ms "${SURPLUS_LOCAL_IDLE_WINDOW_MS:-0}" \
  --min-runtime-before-preempt-ms "${SURPLUS_LOCAL_MIN_RUNTIME_MS:-0}"
start billing "$BIN/billing/service/surplus-billing" --database-url "$DB_URL" --listen "$BILLING"
for _ in $(seq 1 100); do [ -s "$STATE/operator.key" ] && break; sleep 0.1; done
[ -s "$STATE/operator.key" ] || { echo "up.sh: the control plane did not start; see .surplus/logs/control.log" >&2; exit 1; }
OPERATOR_KEY="$(cat "$STATE/operator.key")"
export SURPLUS_ENDPOINT="$GRPC" SURPLUS_API_KEY="$OPERATOR_KEY"
for _ in $(seq 1 100); do "$BIN/src/cli/surplus" tenants >/dev/null 2>&1 && break; sleep 0.1; done

# --- workers -------------------------------------------------------------------------
for i in $(seq 1 "$WORKERS"); do
  name="sim-node-$i"
  if alive "worker-$name"; then echo "  worker-$name already running"; continue; fi
  key_file="$STATE/worker-$name.key"
  if [ ! -s "$key_file" ]; then
    ( umask 077; "$BIN/src/cli/surplus" key issue --role worker --description "$name" -o json |
        sed -n 's/.*"apiKey": *"\([^"]*\)".*/\1/p' > "$key_file" )
  fi
  SURPLUS_API_KEY="$(cat "$key_file")" start "worker-$name" "$BIN/gpu_worker/surplus-worker" --node "$name" \
    --gpus "$GPUS" --gpu-model H100-80GB --backend sim --control-endpoint "$GRPC" --billing-endpoint "$BILLING" \
    --state-dir "$STATE/workers/$name" --usage-interval-ms 2000 --job-cgroups "${SURPLUS_LOCAL_JOB_CGROUPS:-off}"
done

cat > "$STATE/local.env" <<ENV
export SURPLUS_ENDPOINT=$GRPC
export SURPLUS_API_KEY=$OPERATOR_KEY
export SURPLUS_BILLING_ENDPOINT=$BILLING
export SURPLUS_HTTP=http://$HTTP
export SURPLUS_DATABASE_URL=$DB_URL
ENV
chmod 600 "$STATE/local.env"
cat <<MSG
Surplus is up:
  gRPC API        $GRPC          (surplus-control)
  billing         $BILLING          (surplus-billing)
  dashboard       http://$HTTP/   (also /metrics, /healthz)
  PostgreSQL      $DB_URL
  workers         $WORKERS simulated node(s) x $GPUS H100-80GB
For the CLI:  source .surplus/local.env && $BIN/src/cli/surplus capacity
Stop with:    deploy/local/down.sh
MSG
