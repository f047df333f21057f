# Tests of the CUDA worker backend. Built only with the CUDA toolkit.
#   cuda_backend_test     CPU only (label unit): naming, health, MPS limits, SM planning,
#                         clean failure without NVML.
#   fake_nvml_test        CPU only (label unit): the NVML side of the backend against
#                         libsurplus-fake-nvml.so, a fake driver library (fake_nvml.cc).
#   cuda_backend_gputest  on a real GPU (label gpu); every test skips, saying why, where
#                         there is no GPU.
if(NOT TARGET surplus_worker_cuda)
  return()
endif()

add_executable(cuda_backend_test ${CMAKE_CURRENT_LIST_DIR}/cuda_backend_test.cc)
target_compile_options(cuda_backend_test PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(cuda_backend_test PRIVATE surplus_worker_cuda GTest::gtest_main)
gtest_discover_tests(cuda_backend_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")

# A fake libnvidia-ml.so: the NVML functions the worker resolves, answering from a JSON
# state file (SURPLUS_FAKE_NVML_STATE). Also used by the end-to-end tests.
find_package(nlohmann_json 3 REQUIRED)
add_library(surplus_fake_nvml MODULE ${CMAKE_CURRENT_LIST_DIR}/fake_nvml.cc)
set_target_properties(surplus_fake_nvml PROPERTIES OUTPUT_NAME surplus-fake-nvml PREFIX lib
  CXX_VISIBILITY_PRESET hidden)
target_include_directories(surplus_fake_nvml PRIVATE ${PROJECT_SOURCE_DIR})
target_compile_options(surplus_fake_nvml PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(surplus_fake_nvml PRIVATE nlohmann_json::nlohmann_json Threads::Threads)

add_executable(fake_nvml_test ${CMAKE_CURRENT_LIST_DIR}/fake_nvml_test.cc)
target_compile_options(fake_nvml_test PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(fake_nvml_test PRIVATE surplus_worker_cuda nlohmann_json::nlohmann_json GTest::gtest_main)
target_compile_definitions(fake_nvml_test PRIVATE
  SURPLUS_FAKE_NVML_PATH="$<TARGET_FILE:surplus_fake_nvml>")
add_dependencies(fake_nvml_test surplus_fake_nvml)
gtest_discover_tests(fake_nvml_test PROPERTIES LABELS unit SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")

add_executable(cuda_backend_gputest ${CMAKE_CURRENT_LIST_DIR}/cuda_backend_gputest.cc)
target_compile_options(cuda_backend_gputest PRIVATE ${SURPLUS_WARNING_FLAGS})
target_link_libraries(cuda_backend_gputest PRIVATE surplus_worker_cuda GTest::gtest_main)
target_compile_definitions(cuda_backend_gputest PRIVATE
  SURPLUS_CUDA_PROBE_PATH="$<TARGET_FILE:surplus-cuda-probe>")
add_dependencies(cuda_backend_gputest surplus-cuda-probe)
# Listed at test time, not build time: listing needs no GPU either way, but the GPU
# runs may happen on another machine than the build.
# A skipped GPU test is reported by CTest as skipped, never as passed.
gtest_discover_tests(cuda_backend_gputest PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]"
  DISCOVERY_MODE PRE_TEST)
