# The worker agent: JobTable decisions, usage metering, log chunking, the sim backend and
# restart recovery (real files and processes in a temporary folder; no network). Only
# where the service libraries are built.
if(TARGET surplus_worker)
  add_executable(worker_test ${CMAKE_CURRENT_LIST_DIR}/worker_test.cc)
  target_compile_options(worker_test PRIVATE ${SURPLUS_WARNING_FLAGS})
  target_link_libraries(worker_test PRIVATE surplus_worker GTest::gtest_main)
  gtest_discover_tests(worker_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endif()
