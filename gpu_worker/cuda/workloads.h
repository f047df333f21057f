#pragma once
// Built-in GPU workloads run inside the worker: a cuBLAS BF16 GEMM and an NCCL all-reduce.
// Both report through a log callback and stop within about 100 ms of `stop`.

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpu_worker/cuda/cuda_driver.h"
#include "gpu_worker/cuda/fill_kernels.h"
#include "gpu_worker/gpu_backend.h"

namespace surplus::worker {

using LogFn = std::function<void(const std::string&)>;

/// Where a workload runs on one GPU.
struct ExecTarget {
  int cuda_device = 0;
  /// Context made current for the run (a green context); null: the device's primary
  /// context.
  CUcontext context = nullptr;
  /// Stream to run on (from the green context); null: the workload creates one.
  CUstream stream = nullptr;
  int sm_count = 0;      ///< SMs the target may use (passed to cuBLAS as a hint)
  int total_sms = 0;     ///< SMs of the whole GPU
  std::string isolation; ///< for log lines
};

struct GemmOptions {
  int size = 8192;             ///< m = n = k
  int64_t duration_ms = 10000; ///< timed part; at least one batch runs
};

/// BF16 GEMM (FP32 accumulate, cublasGemmEx) repeated for `duration_ms` on each target
/// in parallel. metrics: tflops (sum over targets), seconds, gemms, sm_count,
/// first_kernel_ms (run start to the first GEMM finished).
absl::StatusOr<BuiltinResult> RunGemm(const DriverApi& driver,
                                      const std::vector<ExecTarget>& targets,
                                      const GemmOptions& options, const std::atomic<bool>& stop,
                                      const LogFn& log);

struct AllReduceOptions {
  int64_t bytes = 256LL << 20;  ///< per rank, float32 sum
  int64_t duration_ms = 5000;
};

/// NCCL all-reduce across `cuda_devices` in this process (ncclCommInitAll, one
/// communicator per GPU). metrics as nccl-tests defines them: algbw_gbps = bytes / time,
/// busbw_gbps = algbw * 2(n-1)/n (0 for one GPU), plus time_us per all-reduce.
absl::StatusOr<BuiltinResult> RunAllReduce(const std::vector<int>& cuda_devices,
                                           const AllReduceOptions& options,
                                           const std::atomic<bool>& stop, const LogFn& log);

}  // namespace surplus::worker
