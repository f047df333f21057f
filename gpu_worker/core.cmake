# The worker's spool and process runner: absl + POSIX only, so this library is also
# built (and tested) in SURPLUS_PURE_ONLY builds. Included from the top-level
# CMakeLists.txt and from gpu_worker/CMakeLists.txt; defined once.
include_guard(GLOBAL)

surplus_add_library(surplus_worker_core
  SOURCES
    ${CMAKE_CURRENT_LIST_DIR}/usage_record.cc
    ${CMAKE_CURRENT_LIST_DIR}/spool.cc
    ${CMAKE_CURRENT_LIST_DIR}/runner.cc
    ${CMAKE_CURRENT_LIST_DIR}/cgroups.cc
  PUBLIC_DEPS absl::status absl::statusor absl::strings absl::synchronization absl::time
              Threads::Threads)
