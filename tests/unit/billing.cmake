# Pure billing logic: rating, calendar months, invoices and their renderings.
add_executable(billing_test
  ${CMAKE_CURRENT_LIST_DIR}/billing_rating_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/billing_invoice_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/billing_purity_test.cc)
target_compile_options(billing_test PRIVATE ${SURPLUS_WARNING_FLAGS})
target_compile_definitions(billing_test PRIVATE SURPLUS_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
target_link_libraries(billing_test PRIVATE surplus_billing_logic GTest::gtest_main)
gtest_discover_tests(billing_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
