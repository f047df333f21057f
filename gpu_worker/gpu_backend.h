#pragma once
// The worker's view of the GPUs of its node. Two implementations: SimBackend (simulated
// GPUs, for machines without one) and CudaBackend (NVML + CUDA, gpu_worker/cuda/).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace surplus::worker {

struct GpuProcess {
  int64_t pid = 0;
  int64_t used_memory_mib = 0;
};

struct MigInstance {
  std::string uuid;         ///< MIG device UUID ("MIG-...")
  std::string profile;      ///< e.g. "1g.10gb"
  int slot_start = 0;       ///< placement start (memory slot)
};

/// One sample of one GPU.
struct GpuTelemetry {
  int index = 0;
  std::string uuid;
  std::string model;            ///< surplus GpuModel name, e.g. "H100-80GB"
  int utilization_pct = 0;      ///< 0..100, -1 when not supported
  int64_t memory_used_mib = 0;
  int64_t memory_total_mib = 0;
  int temperature_c = -1;
  int64_t power_mw = -1;
  uint64_t ecc_uncorrected = 0; ///< volatile uncorrected ECC errors
  int last_xid = 0;             ///< most recent XID event seen (0 = none)
  bool healthy = true;
  std::string health_reason;    ///< why unhealthy
  bool mig_enabled = false;
  std::vector<MigInstance> mig_instances;
  std::vector<GpuProcess> processes;  ///< all compute processes on the GPU
};

/// What a job is given to run in: environment for exec jobs, device handles for built-ins.
struct SliceRequest {
  std::string job_id;
  std::vector<int> gpu_indices;  ///< one GPU for a slice, N for whole GPUs
  std::string slice_profile;     ///< e.g. "3g.40gb"; the whole-GPU profile for whole GPUs
  int slot_start = 0;
  int sm_count = 0;              ///< SMs of the slice (from the model table)
  int compute_units = 7;
  int64_t memory_mib = 0;        ///< memory limit of the slice
  bool exec = true;              ///< exec job (process) or built-in (in-process)
};

struct PreparedSlice {
  /// Variables for an exec job's environment (CUDA_VISIBLE_DEVICES, MPS pipe, limits).
  std::map<std::string, std::string> env;
  std::string isolation;  ///< "mig", "mps", "green-context", "none", "sim"
};

/// Result of a built-in workload, shown in the job's log and status.
struct BuiltinResult {
  int exit_code = 0;
  std::string summary;  ///< one line, e.g. "gemm bf16 8192^3: 712.4 TFLOP/s over 10.0 s"
  std::map<std::string, double> metrics;  ///< e.g. {"tflops": 712.4}
};

struct BuiltinRequest {
  std::string kind;  ///< "gemm" or "allreduce" ("sleep" is run by the worker itself)
  int64_t duration_ms = 0;
  std::map<std::string, std::string> params;
  SliceRequest slice;
};

class GpuBackend {
 public:
  virtual ~GpuBackend() = default;
  virtual std::string Name() const = 0;
  /// GPUs of the node: fills index, uuid, model, memory_total_mib, mig state.
  virtual absl::StatusOr<std::vector<GpuTelemetry>> Discover() = 0;
  /// One telemetry sample of every GPU. Fields a GPU does not support keep their defaults.
  virtual absl::StatusOr<std::vector<GpuTelemetry>> Sample() = 0;
  /// Sets up isolation for a job (MIG instance, MPS limits, ...).
  virtual absl::StatusOr<PreparedSlice> PrepareSlice(const SliceRequest& request) = 0;
  virtual void ReleaseSlice(const std::string& job_id) = 0;
  /// Runs a built-in GPU workload in-process until done or `stop` becomes true.
  /// `log` receives human-readable lines for the job's log.
  virtual absl::StatusOr<BuiltinResult> RunBuiltin(
      const BuiltinRequest& request, const std::atomic<bool>& stop,
      const std::function<void(const std::string&)>& log) = 0;
};

}  // namespace surplus::worker
