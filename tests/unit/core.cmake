add_executable(core_test ${CMAKE_CURRENT_LIST_DIR}/core_test.cc)
target_link_libraries(core_test PRIVATE surplus_core GTest::gtest_main)
gtest_discover_tests(core_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
