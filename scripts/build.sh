#!/usr/bin/env bash
# Configures and builds Surplus into ./build (or $SURPLUS_BUILD_DIR) with two jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${SURPLUS_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" \
  -DSURPLUS_WARNINGS_AS_ERRORS=ON ${SURPLUS_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"${SURPLUS_JOBS:-2}"
