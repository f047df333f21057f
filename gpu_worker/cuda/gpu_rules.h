#pragma once
// Pure rules of the CUDA backend that need no GPU: naming, health, process ownership,
// MPS limits and green-context SM planning. Kept apart so they are unit-tested on CPU.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gpu_worker/gpu_backend.h"

namespace surplus::worker {

/// Surplus GpuModel name for an NVML device name and its total memory, e.g.
/// ("NVIDIA H100 80GB HBM3", 81559) -> "H100-80GB". Empty when no model matches: the
/// model table's SM count and memory must be right for the part (an H100 PCIe has 114
/// SMs, an H100 NVL 94 GB, so neither is an "H100-80GB").
std::string ModelNameForDevice(absl::string_view nvml_name, int64_t memory_total_mib);

/// MIG profile from a MIG device name, e.g. "NVIDIA H100 80GB HBM3 MIG 3g.40gb" ->
/// "3g.40gb"; empty when the name carries none.
std::string MigProfileFromDeviceName(absl::string_view mig_device_name);

/// XIDs caused by the application rather than the GPU (the same list the NVIDIA device
/// plugin ignores): they are reported but do not make the GPU unhealthy.
bool IsApplicationXid(int xid);

/// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" from the 16 bytes of a CUDA device UUID.
std::string FormatGpuUuid(const unsigned char bytes[16]);

/// Health of one sample from what NVML reported. `lost` is set when NVML answered
/// GPU_IS_LOST; `critical_xid` is the last XID that is not an application XID (0: none).
struct HealthInputs {
  bool lost = false;
  uint64_t ecc_uncorrected = 0;
  int critical_xid = 0;
  bool reset_required = false;  ///< NVML answered RESET_REQUIRED
};
void ApplyHealth(const HealthInputs& in, GpuTelemetry* gpu);

/// Environment an exec job needs to run as a client of the per-GPU MPS daemon with the
/// limits of its slice: the job sees one GPU (by UUID), may use compute_units/7 of its
/// threads (rounded to the nearest percent) and at most memory_mib of device memory.
std::map<std::string, std::string> MpsClientEnv(const std::string& gpu_uuid,
                                                const std::string& pipe_dir,
                                                const std::string& log_dir, int compute_units,
                                                int64_t memory_mib);

/// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE for a slice: round(100 * compute_units / 7).
int MpsActiveThreadPercentage(int compute_units);

/// How a slice maps onto the SM groups of one green-context split of a GPU.
///
/// The GPU's SMs are split once into `groups` equal groups of `group_sms` SMs plus
/// `remaining_sms` left over (on an H100 the driver makes 15 groups of 8 and leaves 12:
/// groups follow the GPU's processing clusters). Each memory slot of the placement table
/// owns a fixed set of groups, so slices whose placements do not overlap get disjoint
/// SMs: slots 0..6, where slices start, own groups/7 groups each; slot 7, which no
/// one-slot slice uses, owns the groups left over and the remainder. A slice takes the
/// first ceil(sm_count/group_sms) groups of the slots it occupies (at most what they own),
/// plus the remainder when it owns slot 7 and is still short of sm_count. The whole-GPU
/// slice takes everything.
///
/// Known issue: on an H100 the 3g slice at placement 4 thus gets 56 + 12 = 68 SMs, yet
/// its GEMM rate is below that of the 64-SM slice at placement 0 (BENCHMARKS.md): the
/// remainder SMs are not co-scheduled with the groups, which likely defeats thread-block
/// clusters. Leaving the remainder out (56 SMs) or splitting with
/// CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING (exactly 60) are the candidates; both
/// need measuring on the GPU.
struct GreenSlicePlan {
  int first_group = 0;
  int group_count = 0;
  bool include_remaining = false;
  int sm_count = 0;  ///< SMs the slice really gets
};
struct SmSplit {
  int groups = 0;
  int group_sms = 0;
  int remaining_sms = 0;
};
absl::StatusOr<GreenSlicePlan> PlanGreenSlice(const SmSplit& split, int slot_start,
                                              int memory_slots, int sm_count, bool whole_gpu);

/// Memory-slot mask of a request, checked against the placement table of `model_name`.
absl::StatusOr<uint8_t> SliceMask(const std::string& model_name, const SliceRequest& request);

/// Processes on a GPU that the worker did not start: owner work. `is_worker_process` says
/// whether a pid belongs to the worker (itself, its MPS daemons, its jobs and their
/// children).
std::vector<GpuProcess> OwnerProcesses(const std::vector<GpuProcess>& processes,
                                       const std::function<bool(int64_t)>& is_worker_process);

/// Parent pid of `pid` from /proc (nullopt when the process is gone). `proc_root` is for
/// tests.
std::optional<int64_t> ParentPid(int64_t pid, const std::string& proc_root = "/proc");

}  // namespace surplus::worker
