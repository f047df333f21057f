#!/usr/bin/env bash
# Runs the reflection client against SURPLUS_ENDPOINT with the operator key in
# SURPLUS_API_KEY, installing its npm dependencies first when they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ ! -d node_modules ]]; then
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
  else
    npm install --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
exec node client.js
