# The worker's spool (real files in a temporary folder) and runner (real processes).
add_executable(worker_core_test
  ${CMAKE_CURRENT_LIST_DIR}/spool_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/runner_test.cc)
target_compile_options(worker_core_test PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(worker_core_test PRIVATE surplus_worker_core GTest::gtest_main)
gtest_discover_tests(worker_core_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
