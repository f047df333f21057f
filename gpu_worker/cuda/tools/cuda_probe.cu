// surplus-cuda-probe: a small CUDA program to run as an exec job. It reports what the
// job sees (device, SMs, memory), allocates device memory and runs a kernel for a while,
// so that tests can check the isolation a slice gives an exec job.
//
//   surplus-cuda-probe [--alloc-mib N] [--kernel-ms M]
//
// Prints one JSON line. Exit status: 0 ok, 2 the allocation failed, 1 any other error.

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

__global__ void Spin(unsigned long long cycles, unsigned long long* sink) {
  const unsigned long long start = clock64();
  unsigned long long x = threadIdx.x;
  while (clock64() - start < cycles) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  if (x == 42) *sink = x;  // keeps the loop from being optimized away
}

void PrintEscaped(const char* s) {
  for (; *s; ++s) {
    if (*s == '"' || *s == '\\') std::putchar('\\');
    std::putchar(*s);
  }
}

}  // namespace

int main(int argc, char** argv) {
  long long alloc_mib = 0;
  long long kernel_ms = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--alloc-mib") == 0) alloc_mib = std::atoll(argv[i + 1]);
    else if (std::strcmp(argv[i], "--kernel-ms") == 0) kernel_ms = std::atoll(argv[i + 1]);
  }
  int devices = 0;
  cudaError_t rc = cudaGetDeviceCount(&devices);
  if (rc != cudaSuccess || devices == 0) {
    std::printf("{\"ok\":false,\"error\":\"%s\"}\n", cudaGetErrorString(rc));
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);

  void* block = nullptr;
  bool alloc_ok = true;
  if (alloc_mib > 0) {
    rc = cudaMalloc(&block, static_cast<size_t>(alloc_mib) << 20);
    alloc_ok = rc == cudaSuccess;
    if (alloc_ok) cudaMemset(block, 1, static_cast<size_t>(alloc_mib) << 20);
  }
  double kernel_wall_ms = 0;
  bool kernel_ok = true;
  if (alloc_ok && kernel_ms > 0) {
    unsigned long long* sink = nullptr;
    cudaMalloc(&sink, sizeof(*sink));
    int clock_khz = 0;  // cycles per millisecond
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
    const unsigned long long cycles =
        static_cast<unsigned long long>(clock_khz) * static_cast<unsigned long long>(kernel_ms);
    auto t0 = std::chrono::steady_clock::now();
    Spin<<<sms * 4, 256>>>(cycles, sink);
    kernel_ok = cudaDeviceSynchronize() == cudaSuccess;
    kernel_wall_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    cudaFree(sink);
  }
  std::printf("{\"ok\":%s,\"device\":\"", alloc_ok && kernel_ok ? "true" : "false");
  PrintEscaped(prop.name);
  std::printf("\",\"sms\":%d,\"mem_total_mib\":%zu,\"mem_free_mib\":%zu,\"alloc_mib\":%lld,"
              "\"alloc_ok\":%s,\"alloc_error\":\"%s\",\"kernel_ms\":%.1f}\n",
              sms, total_b >> 20, free_b >> 20, alloc_mib, alloc_ok ? "true" : "false",
              alloc_ok ? "" : cudaGetErrorString(rc), kernel_wall_ms);
  std::fflush(stdout);
  if (block) cudaFree(block);
  if (!alloc_ok) return 2;
  return kernel_ok ? 0 : 1;
}
