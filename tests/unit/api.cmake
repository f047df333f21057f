# The control plane's service helpers that need no database: the executor.
if(TARGET surplus_api)
  add_executable(api_executor_test ${CMAKE_CURRENT_LIST_DIR}/api_executor_test.cc)
  target_compile_options(api_executor_test PRIVATE ${SURPLUS_WARNING_FLAGS})
  target_link_libraries(api_executor_test PRIVATE surplus_api GTest::gtest_main)
  gtest_discover_tests(api_executor_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endif()
