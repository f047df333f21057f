# The CLI's parsing, rendering and exit codes, and whole commands driven against an
# in-process fake server (no network). Only where the service libraries are built.
if(TARGET surplus_api_client)
  add_executable(cli_test
    ${CMAKE_CURRENT_LIST_DIR}/cli_parse_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/cli_render_test.cc
    ${CMAKE_CURRENT_LIST_DIR}/cli_run_test.cc)
  target_compile_options(cli_test PRIVATE ${SURPLUS_WARNING_FLAGS})
  target_link_libraries(cli_test PRIVATE surplus_cli surplus_api_client surplus_common
                                         surplus_core surplus_proto GTest::gtest_main)
  gtest_discover_tests(cli_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
endif()
