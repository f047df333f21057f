# Scheduler and market: pure logic, no database, no network.
add_executable(scheduler_test
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_property_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/scheduler_harvest_test.cc)
target_compile_options(scheduler_test PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(scheduler_test PRIVATE surplus_scheduler GTest::gtest_main)
gtest_discover_tests(scheduler_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
