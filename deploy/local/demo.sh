#!/usr/bin/env bash
# The Surplus demo: installs what is missing, builds, starts a local marketplace with two
# simulated 8-GPU H100 nodes, and walks through a round of the market: two tenants bid,
# jobs run as real processes, a higher bid preempts a lower one with notice, usage is
# metered and each tenant gets an invoice. Leaves the stack running unless --stop.
#
#   deploy/local/demo.sh [--stop]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
STOP=0
[ "${1:-}" = "--stop" ] && STOP=1

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "Installing missing packages and building (first run takes a few minutes)"
bash scripts/deps.sh
source scripts/env.sh
bash scripts/build.sh >/dev/null
SURPLUS="$ROOT/${SURPLUS_BUILD_DIR:-build}/src/cli/surplus"

say "Starting a fresh local stack: PostgreSQL, control plane, billing, 2 simulated nodes x 8 H100"
bash deploy/local/down.sh --wipe >/dev/null 2>&1 || true
SURPLUS_LOCAL_NOTICE_MS=5000 bash deploy/local/up.sh --workers 2 --gpus-per-worker 8
source .surplus/local.env
OPERATOR_KEY="$SURPLUS_API_KEY"
surplus() { "$SURPLUS" "$@"; }
for _ in $(seq 1 50); do [ "$(surplus nodes -o json | grep -c '"name"')" -ge 2 ] && break; sleep 0.2; done

say "The operator sets a reserve price and creates two tenants with API keys"
run surplus reserve-price --model H100-80GB --price 1.00
run surplus tenant create acme --name "Acme Research"
run surplus tenant create globex --name "Globex AI"
key_of() { surplus key issue --role tenant --tenant "$1" -o json | sed -n 's/.*"apiKey": *"\([^"]*\)".*/\1/p'; }
ACME_KEY="$(key_of acme)"
GLOBEX_KEY="$(key_of globex)"
as() { local k="$1"; shift; SURPLUS_API_KEY="$k" "$SURPLUS" "$@"; }
job_id() { sed -n 's/^job \(job-[0-9a-f]*\).*/\1/p; s/.*"id": *"\(job-[0-9a-f]*\)".*/\1/p' | head -n 1; }

say "Tenants submit a mix of jobs: whole GPUs and MIG-shaped slices, spot bids and on-demand"
TRAIN=$(as "$ACME_KEY" submit -o json --name train --gpus 8 --bid 2.00 --request-id demo-train -- \
  /bin/sh -c 'trap "echo got SIGTERM: \$(cat \$SURPLUS_PREEMPT_NOTICE_FILE); exit 143" TERM; echo training on $CUDA_VISIBLE_DEVICES; while true; do sleep 1; done' | job_id)
echo "acme   train      8 GPUs   spot  bid \$2.00   -> $TRAIN"
NB=$(as "$ACME_KEY" submit -o json --name notebook --slice 1g.10gb --bid 1.50 --request-id demo-nb --builtin sleep --duration 15s | job_id)
echo "acme   notebook   1g.10gb  spot  bid \$1.50   -> $NB"
EVAL=$(as "$ACME_KEY" submit -o json --name eval --slice 3g.40gb --bid 2.50 --request-id demo-eval -- /bin/sh -c 'echo eval on slice $SURPLUS_SLICE_PROFILE; sleep 15' | job_id)
echo "acme   eval       3g.40gb  spot  bid \$2.50   -> $EVAL"
SERVE=$(as "$GLOBEX_KEY" submit -o json --name serving --gpus 4 --tier on-demand --request-id demo-serve --builtin sleep --duration 20s | job_id)
echo "globex serving    4 GPUs   on-demand         -> $SERVE"
TUNE=$(as "$GLOBEX_KEY" submit -o json --name finetune --gpus 2 --bid 3.00 --request-id demo-tune -- /bin/sh -c 'echo finetune; sleep 10' | job_id)
echo "globex finetune   2 GPUs   spot  bid \$3.00   -> $TUNE"
sleep 3

say "The queue and the capacity while they run"
run surplus jobs
run surplus capacity
echo "(dashboard: $SURPLUS_HTTP/)"

say "Globex bids \$6.00 for 8 GPUs: only 1 is free, so the lowest bid (acme's train at \$2.00) is preempted"
URGENT=$(as "$GLOBEX_KEY" submit -o json --name urgent --gpus 8 --bid 6.00 --request-id demo-urgent -- /bin/sh -c 'echo urgent run; sleep 8' | job_id)
echo "globex urgent     8 GPUs   spot  bid \$6.00   -> $URGENT"
for _ in $(seq 1 60); do
  state=$(surplus job "$TRAIN" -o json | sed -n 's/.*"state": *"\([A-Z_]*\)".*/\1/p' | head -n1)
  [ "$state" = "JOB_STATE_PREEMPTED" ] && break
  sleep 0.5
done
run surplus job "$TRAIN"
echo "What acme's job saw (its log):"
as "$ACME_KEY" logs "$TRAIN" | sed 's/^/  | /'

say "Waiting for every job to finish"
for j in "$NB" "$EVAL" "$SERVE" "$TUNE" "$URGENT"; do
  for _ in $(seq 1 120); do
    state=$(surplus job "$j" -o json | sed -n 's/.*"state": *"\([A-Z_]*\)".*/\1/p' | head -n1)
    case "$state" in JOB_STATE_SUCCEEDED|JOB_STATE_FAILED|JOB_STATE_CANCELLED|JOB_STATE_PREEMPTED|JOB_STATE_LOST) break ;; esac
    sleep 0.5
  done
done
run surplus jobs
sleep 4  # the last usage records reach billing

PERIOD=$(date -u +%Y-%m)
say "Invoices for $PERIOD: GPU-milliseconds x the price in force, rounded once per line"
FINANCE_KEY=$(surplus key issue --role finance -o json | sed -n 's/.*"apiKey": *"\([^"]*\)".*/\1/p')
run env SURPLUS_API_KEY="$FINANCE_KEY" "$SURPLUS" invoice --tenant acme --period "$PERIOD"
run env SURPLUS_API_KEY="$FINANCE_KEY" "$SURPLUS" invoice --tenant globex --period "$PERIOD"

if [ "$STOP" -eq 1 ]; then
  say "Stopping the stack"
  bash deploy/local/down.sh
else
  say "The stack is still running"
  echo "Try:   source .surplus/local.env && $SURPLUS capacity"
  echo "Stop:  deploy/local/down.sh   (add --wipe to delete its data)"
fi
