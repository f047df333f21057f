#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with clang, libFuzzer and the address and
# undefined-behaviour sanitizers into ./build-fuzz, and runs each for a fixed number of
# inputs from a fixed seed, so a run is repeatable. A crash or a broken property fails
# the script, which prints the end of libFuzzer's report (the failing input is saved in
# build-fuzz/ as crash-*).
#   scripts/fuzz.sh [RUNS]     (default 200000 inputs per target; slower targets get a
#                               share: the spool, which writes and syncs files for every
#                               input, a tenth; the scheduler, which builds an engine for
#                               every input, a hundredth)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-200000}"
BUILD_DIR="${SURPLUS_FUZZ_BUILD_DIR:-build-fuzz}"
CXX_FUZZ="$(command -v clang++-14 || command -v clang++)"
CC_FUZZ="$(command -v clang-14 || command -v clang)"
cmake -S . -B "$BUILD_DIR" -DSURPLUS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX_FUZZ" -DCMAKE_C_COMPILER="$CC_FUZZ" >/dev/null
TARGETS=(usage_record spool money scheduler)
declare -A SHARE=([usage_record]=1 [spool]=10 [money]=1 [scheduler]=100)
cmake --build "$BUILD_DIR" -j"${SURPLUS_JOBS:-2}" --target "${TARGETS[@]/#/fuzz_}"
for t in "${TARGETS[@]}"; do
  corpus="$BUILD_DIR/corpus/$t"
  mkdir -p "$corpus"
  runs=$((RUNS / SHARE[$t]))
  log="$BUILD_DIR/fuzz_$t.log"
  if ! (cd "$BUILD_DIR" && "fuzz/fuzz_$t" -runs="$runs" -seed=1 -use_value_profile=1 -len_control=0 -max_len=1024 -print_final_stats=1 \
        "corpus/$t") >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz_$t failed (full output: $log)"
    exit 1
  fi
  echo "fuzz_$t: $(grep -E '^Done [0-9]+ runs' "$log" || echo "$runs runs")"
done
echo "fuzz: all targets passed"
