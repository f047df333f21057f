#pragma once
// GPU telemetry from NVML: discovery, periodic samples on a background thread, XID events
// and health. No CUDA runtime involved, so it works while CUDA contexts are busy or
// broken.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "gpu_worker/cuda/nvml_api.h"
#include "gpu_worker/gpu_backend.h"

namespace surplus::worker {

struct NvmlTelemetryOptions {
  std::string library_path = "libnvidia-ml.so.1";
  /// Time between samples of the background sampler; zero samples on every Latest() call
  /// instead of running a thread.
  std::chrono::milliseconds sample_interval{1000};
};

class NvmlTelemetry {
 public:
  /// FAILED_PRECONDITION "no NVIDIA GPU: ..." when NVML is missing or sees no GPU.
  static absl::StatusOr<std::unique_ptr<NvmlTelemetry>> Create(
      const NvmlTelemetryOptions& options);
  ~NvmlTelemetry();
  NvmlTelemetry(const NvmlTelemetry&) = delete;
  NvmlTelemetry& operator=(const NvmlTelemetry&) = delete;

  int device_count() const { return static_cast<int>(devices_.size()); }
  /// Static facts of every GPU (index, uuid, model, memory total, MIG state).
  std::vector<GpuTelemetry> Discover();
  /// The most recent sample (taken now when there is no sampler thread).
  std::vector<GpuTelemetry> Latest();
  /// Reads NVML now: every field of every GPU, XID events drained first.
  std::vector<GpuTelemetry> SampleNow();
  /// The NVML device name of GPU `index` ("NVIDIA H100 80GB HBM3").
  std::string DeviceName(int index) const;
  uint64_t samples_taken() const { return samples_taken_.load(); }

 private:
  struct Device {
    nvmlDevice_t handle = nullptr;
    int index = 0;
    std::string uuid;
    std::string name;
    std::string model;
    int64_t memory_total_mib = 0;
    // Guarded by state_mu_.
    int last_xid = 0;
    int critical_xid = 0;
  };

  NvmlTelemetry(std::unique_ptr<NvmlLibrary> nvml, const NvmlTelemetryOptions& options);
  absl::Status Init();
  GpuTelemetry SampleDevice(Device& device, bool full);
  /// MIG instances into `out`, and their device handles into `handles`.
  void ReadMig(Device& device, GpuTelemetry* out, bool* lost, std::vector<nvmlDevice_t>* handles);
  /// Compute and MPS processes of `handle` (a GPU or a MIG device) into `out`, once each.
  void ReadProcesses(nvmlDevice_t handle, GpuTelemetry* out, bool* lost);
  /// Waits up to `timeout_ms` for XID events and records them; 0 only drains. False when
  /// the wait failed without waiting (a lost GPU answers at once): sleep instead.
  bool DrainEvents(unsigned int timeout_ms);
  void Loop();

  std::unique_ptr<NvmlLibrary> nvml_;
  NvmlTelemetryOptions options_;
  std::vector<Device> devices_;
  nvmlEventSet_t event_set_ = nullptr;

  std::mutex state_mu_;   // device XID state
  std::mutex latest_mu_;  // latest_
  std::vector<GpuTelemetry> latest_;
  std::atomic<uint64_t> samples_taken_{0};

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread sampler_;
};

}  // namespace surplus::worker
