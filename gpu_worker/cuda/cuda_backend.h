#pragma once
// CudaBackend: the GpuBackend of real NVIDIA GPUs.
//
// Telemetry comes from NVML (loaded at run time). Isolation is chosen per GPU by what it
// offers, strongest first:
//   - "mig": the GPU is already in MIG mode; an existing instance whose profile and
//     placement match the slice is the slice (CUDA_VISIBLE_DEVICES=MIG-<uuid>). The
//     worker never changes MIG mode or geometry: that is the operator's decision.
//   - "mps": exec jobs on a slice of a non-MIG GPU run as clients of a per-GPU MPS
//     daemon with an active-thread percentage and a pinned memory limit matching the
//     slice.
//   - "green-context": built-in workloads on a slice run in a green context holding an
//     SM partition of the slice's size (CUDA 12.4+).
//   - "none": whole GPUs, which the job has to itself.
//
// Thread-safety: every method may be called from any thread; RunBuiltin calls for
// different jobs run concurrently.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpu_worker/gpu_backend.h"

namespace surplus::worker {

struct CudaBackendOptions {
  std::string nvml_library = "libnvidia-ml.so.1";
  /// Telemetry sampling period (the background sampler; Sample() returns its latest).
  std::chrono::milliseconds sample_interval{1000};
  /// Worker state folder; MPS pipes and logs go to <state_dir>/mps/<gpu index>/. Keep it
  /// short: the MPS control socket path must fit in 108 bytes.
  std::string state_dir = "/var/lib/surplus-worker";
  std::string mps_control_binary = "nvidia-cuda-mps-control";
  /// Exec jobs on a slice of a non-MIG GPU need MPS; without it they are refused.
  bool enable_mps = true;
  /// Create the CUDA contexts of every GPU at start, so that the first built-in job does
  /// not pay for it. Without it, CUDA starts on the first built-in job.
  bool init_cuda = true;
};

class CudaBackend : public GpuBackend {
 public:
  /// FAILED_PRECONDITION "no NVIDIA GPU: ..." where NVML cannot be loaded or sees no GPU.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  std::string Name() const override { return "cuda"; }
  absl::StatusOr<std::vector<GpuTelemetry>> Discover() override;
  absl::StatusOr<std::vector<GpuTelemetry>> Sample() override;
  absl::StatusOr<PreparedSlice> PrepareSlice(const SliceRequest& request) override;
  void ReleaseSlice(const std::string& job_id) override;
  absl::StatusOr<BuiltinResult> RunBuiltin(
      const BuiltinRequest& request, const std::atomic<bool>& stop,
      const std::function<void(const std::string&)>& log) override;

  // --- Owner work versus tenant work -------------------------------------------------
  /// Records that the worker started process `pid` for `job_id`; its children count as
  /// the worker's too. Forgotten on ReleaseSlice(job_id).
  void RegisterJobProcess(const std::string& job_id, int64_t pid);
  /// True for the worker itself, its MPS daemons and servers, its jobs and their
  /// descendants.
  bool IsWorkerProcess(int64_t pid) const;
  /// Processes on `gpu` the worker did not start: the owner's work.
  std::vector<GpuProcess> OwnerProcesses(const GpuTelemetry& gpu) const;

  /// NVML name of GPU `index`, e.g. "NVIDIA H100 80GB HBM3".
  std::string DeviceName(int index) const;
  /// SMs of the green-context slice of `job_id` (0 when it has none).
  int SliceSmCount(const std::string& job_id) const;
  /// Number of telemetry samples taken so far (for the sampling-cost benchmark).
  uint64_t SamplesTaken() const;

 private:
  struct Impl;
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Factory used by the worker's backend selection.
absl::StatusOr<std::unique_ptr<GpuBackend>> MakeCudaBackend(const CudaBackendOptions& options);

}  // namespace surplus::worker
