#include "gpu_worker/cuda/workloads.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#ifdef SURPLUS_HAVE_NCCL
#include <nccl.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace surplus::worker {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

absl::Status CublasStatus(cublasStatus_t rc, const char* what) {
  if (rc == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(rc)));
}

#define SURPLUS_RETURN_IF_ERROR(expr)        \
  do {                                       \
    absl::Status _status = (expr);           \
    if (!_status.ok()) return _status;       \
  } while (0)

// Restores the calling thread's current context when a run ends, so a thread pool that
// runs built-ins leaves no context (primary or green) behind for the next job.
class ScopedContext {
 public:
  explicit ScopedContext(const DriverApi& driver) : driver_(driver) {
    if (driver_.CtxGetCurrent(&previous_) != CUDA_SUCCESS) previous_ = nullptr;
  }
  ~ScopedContext() { driver_.CtxSetCurrent(previous_); }

 private:
  const DriverApi& driver_;
  CUcontext previous_ = nullptr;
};

struct GemmOutcome {
  absl::Status status;
  double tflops = 0;
  double seconds = 0;
  int64_t gemms = 0;
  double first_kernel_ms = 0;
};

// Device buffers and handles of one GEMM run, freed in reverse order.
struct GemmResources {
  void* a = nullptr;
  void* b = nullptr;
  void* c = nullptr;
  cublasHandle_t handle = nullptr;
  cudaStream_t own_stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t done[2] = {nullptr, nullptr};
  ~GemmResources() {
    for (cudaEvent_t e : done) {
      if (e) cudaEventDestroy(e);
    }
    if (start) cudaEventDestroy(start);
    if (handle) cublasDestroy(handle);
    if (a) cudaFree(a);
    if (b) cudaFree(b);
    if (c) cudaFree(c);
    if (own_stream) cudaStreamDestroy(own_stream);
  }
};

absl::Status RunGemmOnTarget(const DriverApi& driver, const ExecTarget& target,
                             const GemmOptions& options, const std::atomic<bool>& stop,
                             const LogFn& log, Clock::time_point run_start, GemmOutcome* out) {
  ScopedContext scoped(driver);
  if (target.context != nullptr) {
    if (CUresult rc = driver.CtxSetCurrent(target.context); rc != CUDA_SUCCESS) {
      return absl::InternalError(absl::StrCat("cuCtxSetCurrent: ", driver.ErrorText(rc)));
    }
  } else {
    SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(target.cuda_device), "cudaSetDevice"));
  }
  GemmResources r;
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(target.stream);
  if (stream == nullptr) {
    SURPLUS_RETURN_IF_ERROR(CudaStatus(
        cudaStreamCreateWithFlags(&r.own_stream, cudaStreamNonBlocking), "cudaStreamCreate"));
    stream = r.own_stream;
  }
  const int n = options.size;
  const size_t elems = static_cast<size_t>(n) * n;
  const size_t bytes = elems * 2;  // BF16
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&r.a, bytes), "cudaMalloc A"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&r.b, bytes), "cudaMalloc B"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&r.c, bytes), "cudaMalloc C"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(FillRandomBf16(r.a, elems, 1, stream), "fill A"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(FillRandomBf16(r.b, elems, 2, stream), "fill B"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(r.c, 0, bytes, stream), "memset C"));
  SURPLUS_RETURN_IF_ERROR(CublasStatus(cublasCreate(&r.handle), "cublasCreate"));
  SURPLUS_RETURN_IF_ERROR(CublasStatus(cublasSetStream(r.handle, stream), "cublasSetStream"));
  if (target.sm_count > 0 && target.sm_count < target.total_sms) {
    // Lets cuBLAS pick kernels and split-K for the SMs the partition really has.
    SURPLUS_RETURN_IF_ERROR(CublasStatus(cublasSetSmCountTarget(r.handle, target.sm_count),
                                         "cublasSetSmCountTarget"));
  }
  const float alpha = 1.0f, beta = 0.0f;
  auto gemm = [&]() {
    return cublasGemmEx(r.handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, r.a, CUDA_R_16BF, n,
                        r.b, CUDA_R_16BF, n, &beta, r.c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT);
  };
  SURPLUS_RETURN_IF_ERROR(CublasStatus(gemm(), "cublasGemmEx"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "first GEMM"));
  out->first_kernel_ms = MsSince(run_start);
  log(absl::StrFormat("gemm: running bf16 %d^3 on GPU %d (%s, %d SMs)", n, target.cuda_device,
                      target.isolation, target.sm_count));

  // Batches of about 50 ms keep two launches in flight (no idle gap between batches) and
  // bound the reaction to `stop`.
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventCreate(&r.start), "cudaEventCreate"));
  for (cudaEvent_t& e : r.done) {
    SURPLUS_RETURN_IF_ERROR(
        CudaStatus(cudaEventCreateWithFlags(&e, cudaEventBlockingSync), "cudaEventCreate"));
  }
  constexpr int kCalibration = 3;
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(r.start, stream), "cudaEventRecord"));
  for (int i = 0; i < kCalibration; ++i) SURPLUS_RETURN_IF_ERROR(CublasStatus(gemm(), "gemm"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(r.done[0], stream), "cudaEventRecord"));
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(r.done[0]), "calibration"));
  float calib_ms = 0;
  cudaEventElapsedTime(&calib_ms, r.start, r.done[0]);
  const double per_gemm_ms = std::max(1e-3, static_cast<double>(calib_ms) / kCalibration);
  const int batch = static_cast<int>(std::clamp(50.0 / per_gemm_ms, 1.0, 2000.0));

  const double flops_per_gemm = 2.0 * n * static_cast<double>(n) * n;
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(
                                           options.duration_ms, 1));
  auto next_progress = Clock::now() + std::chrono::seconds(5);
  int64_t launched = 0;
  int cur = 0;
  bool in_flight = false;
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(r.start, stream), "cudaEventRecord"));
  for (;;) {
    for (int i = 0; i < batch; ++i) SURPLUS_RETURN_IF_ERROR(CublasStatus(gemm(), "gemm"));
    launched += batch;
    SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventRecord(r.done[cur], stream), "cudaEventRecord"));
    if (in_flight) {
      SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(r.done[cur ^ 1]), "gemm batch"));
    }
    in_flight = true;
    cur ^= 1;
    const auto now = Clock::now();
    if (now >= next_progress) {
      float ms = 0;
      cudaEventElapsedTime(&ms, r.start, r.done[cur]);
      const double done_gemms = static_cast<double>(launched - batch);
      log(absl::StrFormat("gemm: GPU %d %.1f s, %.1f TFLOP/s", target.cuda_device, ms / 1e3,
                          done_gemms * flops_per_gemm / (ms / 1e3) / 1e12));
      next_progress = now + std::chrono::seconds(5);
    }
    if (stop.load() || now >= deadline) break;
  }
  const cudaEvent_t last = r.done[cur ^ 1];
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventSynchronize(last), "gemm"));
  float ms = 0;
  SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaEventElapsedTime(&ms, r.start, last), "elapsed"));
  out->gemms = launched;
  out->seconds = ms / 1e3;
  out->tflops = launched * flops_per_gemm / out->seconds / 1e12;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BuiltinResult> RunGemm(const DriverApi& driver,
                                      const std::vector<ExecTarget>& targets,
                                      const GemmOptions& options, const std::atomic<bool>& stop,
                                      const LogFn& log) {
  if (targets.empty()) return absl::InvalidArgumentError("gemm needs a GPU");
  if (options.size < 256 || options.size > 32768) {
    return absl::InvalidArgumentError("gemm size must be in [256, 32768]");
  }
  const auto run_start = Clock::now();
  std::vector<GemmOutcome> outcomes(targets.size());
  std::vector<std::thread> threads;
  // One thread per GPU; the caller's callback sees one line at a time.
  std::mutex log_mu;
  const LogFn locked_log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    log(line);
  };
  for (size_t i = 0; i < targets.size(); ++i) {
    threads.emplace_back([&, i] {
      outcomes[i].status =
          RunGemmOnTarget(driver, targets[i], options, stop, locked_log, run_start, &outcomes[i]);
    });
  }
  for (auto& t : threads) t.join();
  BuiltinResult result;
  double tflops = 0, seconds = 0, first_ms = 0;
  int64_t gemms = 0;
  int sms = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!outcomes[i].status.ok()) return outcomes[i].status;
    tflops += outcomes[i].tflops;
    seconds = std::max(seconds, outcomes[i].seconds);
    gemms += outcomes[i].gemms;
    first_ms = std::max(first_ms, outcomes[i].first_kernel_ms);
    sms += targets[i].sm_count;
  }
  result.summary = absl::StrFormat("gemm bf16 %d^3: %.1f TFLOP/s over %.1f s (%s, %d SMs)",
                                   options.size, tflops, seconds, targets[0].isolation, sms);
  result.metrics["tflops"] = tflops;
  result.metrics["seconds"] = seconds;
  result.metrics["gemms"] = static_cast<double>(gemms);
  result.metrics["sm_count"] = sms;
  result.metrics["first_kernel_ms"] = first_ms;
  log(result.summary);
  return result;
}

#ifdef SURPLUS_HAVE_NCCL
absl::StatusOr<BuiltinResult> RunAllReduce(const std::vector<int>& devices,
                                           const AllReduceOptions& options,
                                           const std::atomic<bool>& stop, const LogFn& log) {
  const int n = static_cast<int>(devices.size());
  if (n == 0) return absl::InvalidArgumentError("allreduce needs a GPU");
  if (options.bytes < 4 || options.bytes % 4 != 0) {
    return absl::InvalidArgumentError("allreduce bytes must be a positive multiple of 4");
  }
  const size_t count = static_cast<size_t>(options.bytes / 4);
  std::vector<ncclComm_t> comms(n, nullptr);
  std::vector<float*> send(n, nullptr), recv(n, nullptr);
  std::vector<cudaStream_t> streams(n, nullptr);
  int saved_device = 0;
  cudaGetDevice(&saved_device);
  // Frees everything on every exit path.
  struct Cleanup {
    std::function<void()> fn;
    ~Cleanup() { fn(); }
  } cleanup{[&] {
    for (int i = 0; i < n; ++i) {
      cudaSetDevice(devices[i]);
      if (streams[i]) cudaStreamSynchronize(streams[i]);
      if (comms[i]) ncclCommDestroy(comms[i]);
      if (send[i]) cudaFree(send[i]);
      if (recv[i]) cudaFree(recv[i]);
      if (streams[i]) cudaStreamDestroy(streams[i]);
    }
    cudaSetDevice(saved_device);
  }};

  ncclResult_t nrc = ncclCommInitAll(comms.data(), n, devices.data());
  if (nrc != ncclSuccess) {
    return absl::InternalError(absl::StrCat("ncclCommInitAll: ", ncclGetErrorString(nrc)));
  }
  for (int i = 0; i < n; ++i) {
    SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(devices[i]), "cudaSetDevice"));
    SURPLUS_RETURN_IF_ERROR(CudaStatus(
        cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking), "cudaStreamCreate"));
    SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&send[i], options.bytes), "cudaMalloc"));
    SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaMalloc(&recv[i], options.bytes), "cudaMalloc"));
    SURPLUS_RETURN_IF_ERROR(CudaStatus(FillRandomF32(send[i], count, i + 1, streams[i]), "fill"));
  }
  auto one = [&]() -> absl::Status {
    ncclGroupStart();
    for (int i = 0; i < n; ++i) {
      ncclResult_t rc =
          ncclAllReduce(send[i], recv[i], count, ncclFloat, ncclSum, comms[i], streams[i]);
      if (rc != ncclSuccess) {
        ncclGroupEnd();
        return absl::InternalError(absl::StrCat("ncclAllReduce: ", ncclGetErrorString(rc)));
      }
    }
    ncclResult_t rc = ncclGroupEnd();
    if (rc != ncclSuccess) {
      return absl::InternalError(absl::StrCat("ncclGroupEnd: ", ncclGetErrorString(rc)));
    }
    return absl::OkStatus();
  };
  auto sync = [&]() -> absl::Status {
    for (int i = 0; i < n; ++i) {
      SURPLUS_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(streams[i]), "allreduce"));
    }
    return absl::OkStatus();
  };
  // Warm-up, which also sizes the timed batches (about 50 ms each).
  auto t0 = Clock::now();
  constexpr int kWarmup = 5;
  for (int i = 0; i < kWarmup; ++i) SURPLUS_RETURN_IF_ERROR(one());
  SURPLUS_RETURN_IF_ERROR(sync());
  const double per_ms = std::max(1e-3, MsSince(t0) / kWarmup);
  const int batch = static_cast<int>(std::clamp(50.0 / per_ms, 1.0, 1000.0));
  log(absl::StrFormat("allreduce: running %lld bytes over %d GPU(s)",
                      static_cast<long long>(options.bytes), n));

  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max<int64_t>(
                                           options.duration_ms, 1));
  int64_t iterations = 0;
  const auto start = Clock::now();
  do {
    for (int i = 0; i < batch; ++i) SURPLUS_RETURN_IF_ERROR(one());
    SURPLUS_RETURN_IF_ERROR(sync());
    iterations += batch;
  } while (!stop.load() && Clock::now() < deadline);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double time_s = seconds / iterations;
  // nccl-tests: algbw = bytes / time; busbw = algbw * 2(n-1)/n for all-reduce.
  const double algbw = options.bytes / time_s / 1e9;
  const double busbw = algbw * 2.0 * (n - 1) / n;
  BuiltinResult result;
  result.summary = absl::StrFormat(
      "allreduce %lld bytes over %d GPU(s): algbw %.1f GB/s, busbw %.1f GB/s, %.1f us%s",
      static_cast<long long>(options.bytes), n, algbw, busbw, time_s * 1e6,
      n == 1 ? " (busbw is 0 by definition on one GPU; algbw is the local copy rate)" : "");
  result.metrics["algbw_gbps"] = algbw;
  result.metrics["busbw_gbps"] = busbw;
  result.metrics["time_us"] = time_s * 1e6;
  result.metrics["iterations"] = static_cast<double>(iterations);
  result.metrics["gpus"] = n;
  log(result.summary);
  return result;
}
#else
absl::StatusOr<BuiltinResult> RunAllReduce(const std::vector<int>&, const AllReduceOptions&,
                                           const std::atomic<bool>&, const LogFn&) {
  return absl::UnimplementedError("allreduce: the worker was built without NCCL");
}
#endif

}  // namespace surplus::worker
