if(NOT TARGET surplus-worker)
  return()
endif()
add_executable(marketplace_e2etest ${CMAKE_CURRENT_LIST_DIR}/marketplace_e2etest.cc)
target_link_libraries(marketplace_e2etest PRIVATE surplus_test_stack surplus_worker_core PkgConfig::HTTPLIB GTest::gtest_main)
target_compile_options(marketplace_e2etest PRIVATE ${SURPLUS_WARNING_FLAGS})
add_dependencies(marketplace_e2etest surplus-control surplus-billing surplus-worker surplus)
# The fake NVML library (tests/gpu/cuda.cmake) for the cuda backend's end-to-end test.
if(TARGET surplus_worker_cuda)
  target_compile_definitions(marketplace_e2etest PRIVATE
    SURPLUS_FAKE_NVML_PATH="$<TARGET_FILE:surplus_fake_nvml>")
  add_dependencies(marketplace_e2etest surplus_fake_nvml)
endif()
gtest_discover_tests(marketplace_e2etest PROPERTIES LABELS e2e SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 240 DISCOVERY_TIMEOUT 30)

# A client built from the .proto files and reflection alone (Node.js, no project code).
find_program(SURPLUS_NODE node)
find_program(SURPLUS_NPM npm)
if(SURPLUS_NODE AND SURPLUS_NPM)
  add_executable(reflection_e2etest ${CMAKE_CURRENT_LIST_DIR}/reflection_e2etest.cc)
  target_link_libraries(reflection_e2etest PRIVATE surplus_test_stack GTest::gtest_main)
  target_compile_options(reflection_e2etest PRIVATE ${SURPLUS_WARNING_FLAGS})
  target_compile_definitions(reflection_e2etest PRIVATE
    SURPLUS_REFLECTION_CLIENT_DIR="${CMAKE_CURRENT_LIST_DIR}/reflection_client")
  add_dependencies(reflection_e2etest surplus-control)
  gtest_discover_tests(reflection_e2etest PROPERTIES LABELS e2e SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT 300 DISCOVERY_TIMEOUT 30)
endif()
