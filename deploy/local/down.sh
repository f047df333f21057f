#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (and only that). Data stays in .surplus/;
# pass --wipe to delete it too.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source scripts/env.sh
STATE="$ROOT/.surplus"
[ -d "$STATE" ] || { echo "nothing to stop"; exit 0; }
stop_pid() {  # name
  local f="$STATE/run/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    echo "  stopped $1"
  fi
  rm -f "$f"
}
for f in "$STATE"/run/worker-*.pid; do [ -e "$f" ] && stop_pid "$(basename "$f" .pid)"; done
stop_pid billing
stop_pid control
if [ -f "$STATE/pg/data/PG_VERSION" ]; then
    if as_owner pg_ctl -D "$STATE/pg/data" status >/dev/null 2>&1; then
    as_owner pg_ctl -D "$STATE/pg/data" -m fast -w stop >/dev/null && echo "  stopped postgresql"
  fi
fi
if [ "${1:-}" = "--wipe" ]; then rm -rf "$STATE"; echo "  removed .surplus/"; fi
