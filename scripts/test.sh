#!/usr/bin/env bash
# Sets everything up and runs the tests: installs missing packages, builds, then runs
# unit, PostgreSQL, end-to-end and GPU tests with CTest, then the fuzz targets. Tests
# start their own PostgreSQL servers (initdb under a temporary folder, loopback only, as
# the `postgres` user when run as root). GPU tests skip, and say why, without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
source scripts/env.sh
bash scripts/build.sh
BUILD_DIR="${SURPLUS_BUILD_DIR:-build}"
# Temporary folders of the tests live under the build folder, readable by `postgres`.
export TMPDIR="$PWD/$BUILD_DIR/test-tmp"
mkdir -p "$TMPDIR"
chmod 1777 "$TMPDIR"
[ "$(id -u)" -eq 0 ] && chmod o+x "$PWD" "$PWD/$BUILD_DIR" 2>/dev/null || true
if ! ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml.so.1'; then
  echo "note: no NVIDIA driver here (libnvidia-ml.so.1 not found): tests labelled 'gpu' report Skipped"
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j2 --timeout 300 "$@"
# Fuzz targets for what is decoded from disk or typed by people (fixed seed and input
# count, so the run is repeatable).
bash scripts/fuzz.sh
