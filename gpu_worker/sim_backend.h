#pragma once
// SimBackend: simulated GPUs for machines without one (tests, demos, load generation).
//
// It keeps the slices it handed out and derives telemetry from them: each slice adds its
// share of compute (compute_units / 7) to the GPU's utilization and its memory to the
// memory in use. The owner's load is replayed from an owner trace: while the trace says
// a GPU is busy, the GPU reports one owner process (pid kSimOwnerPidBase + index),
// OWNER_BUSY_UTIL_PCT more utilization and OWNER_BUSY_MEMORY_MIB more memory. Exec jobs
// get the environment a real backend would give them; built-in GPU workloads are refused.
//
// Thread-safety: every method may be called from any thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gpu_worker/gpu_backend.h"

namespace surplus::worker {

/// One line of an owner trace: from `t_ms` (relative to the worker's start) on, GPU
/// `gpu_index` is busy with the owner's work (or idle again).
struct OwnerTraceEvent {
  int64_t t_ms = 0;
  int gpu_index = 0;
  bool busy = false;
  /// > 0: the GPU raises this XID error at t_ms and stays unhealthy from then on (fault
  /// injection for tests and demos).
  int xid = 0;
};

/// Parses CSV lines `t_ms,gpu_index,busy[,xid]` (busy is 0 or 1; xid optional, >= 0). Blank lines, lines starting
/// with '#' and a header line starting with "t_ms" are skipped. The result is sorted by
/// time (stable, so equal times keep file order). InvalidArgument names the bad line.
absl::StatusOr<std::vector<OwnerTraceEvent>> ParseOwnerTrace(absl::string_view csv);
/// Reads and parses an owner trace file (NotFound when it cannot be read).
absl::StatusOr<std::vector<OwnerTraceEvent>> LoadOwnerTrace(const std::string& path);

/// Pid the simulated owner process of GPU `index` reports.
inline constexpr int64_t kSimOwnerPidBase = 4'000'000;

struct SimBackendOptions {
  std::string node = "sim";          ///< goes into the simulated GPU UUIDs
  std::string gpu_model = "H100-80GB";
  int gpus = 8;
  std::vector<OwnerTraceEvent> owner_trace;
  /// Milliseconds since the worker started; the owner trace is replayed against it.
  /// Defaults to a monotonic clock started when the backend is created.
  std::function<int64_t()> elapsed_ms;
};

class SimBackend : public GpuBackend {
 public:
  /// InvalidArgument for an unknown GPU model or a GPU count outside 1..64.
  static absl::StatusOr<std::unique_ptr<SimBackend>> Create(SimBackendOptions options);

  std::string Name() const override { return "sim"; }
  absl::StatusOr<std::vector<GpuTelemetry>> Discover() override;
  absl::StatusOr<std::vector<GpuTelemetry>> Sample() override;
  /// Environment of a slice: CUDA_VISIBLE_DEVICES (GPU indices), SURPLUS_SLICE_PROFILE,
  /// SURPLUS_SLICE_SLOT_START, SURPLUS_GPU_MODEL and, for a slice smaller than a GPU,
  /// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = round(100 * compute_units / 7) and
  /// CUDA_MPS_PINNED_DEVICE_MEM_LIMIT, as an MPS-isolated slice would get.
  /// FailedPrecondition when the slice overlaps another job's slice; InvalidArgument for
  /// GPU indices outside the node or a slot range outside the GPU.
  absl::StatusOr<PreparedSlice> PrepareSlice(const SliceRequest& request) override;
  void ReleaseSlice(const std::string& job_id) override;
  /// Always FailedPrecondition: GPU workloads need real GPUs.
  absl::StatusOr<BuiltinResult> RunBuiltin(
      const BuiltinRequest& request, const std::atomic<bool>& stop,
      const std::function<void(const std::string&)>& log) override;

  /// Whether the owner trace says GPU `index` is busy at `t_ms` after the start.
  bool OwnerBusyAt(int index, int64_t t_ms) const;
  /// The XID error the trace injects on GPU `index` by `t_ms` (0 = none).
  int XidAt(int index, int64_t t_ms) const;

  static constexpr int kOwnerBusyUtilPct = 60;
  static constexpr int64_t kOwnerBusyMemoryMib = 16 * 1024;

 private:
  struct Slice {
    SliceRequest request;
    uint8_t mask = 0;  ///< memory slots taken on each of request.gpu_indices
  };

  explicit SimBackend(SimBackendOptions options, int64_t memory_total_mib);

  const SimBackendOptions options_;
  const int64_t memory_total_mib_;
  mutable absl::Mutex mu_;
  std::map<std::string, Slice> slices_ ABSL_GUARDED_BY(mu_);  // by job id
};

/// round(100 * compute_units / 7), the MPS active-thread percentage of a slice:
/// 1 -> 14, 2 -> 29, 3 -> 43, 4 -> 57, 7 -> 100.
int SimActiveThreadPercentage(int compute_units);

}  // namespace surplus::worker
