#pragma once
// GPU models are described by data: SM count, memory, and MIG-shaped slice profiles
// with their valid placements (NVIDIA's placement table for the model).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "surplus/money.h"

namespace surplus {

/// Compute units per GPU: MIG divides a GPU into 7 compute slices.
inline constexpr int kComputeUnitsPerGpu = 7;
/// Memory slots per GPU in the placement table (MIG uses 8 memory slices).
inline constexpr int kMemorySlotsPerGpu = 8;
/// Bit mask of all memory slots of a GPU.
inline constexpr uint8_t kFullGpuMask = 0xFF;

/// One MIG-shaped slice profile of a GPU model, e.g. "3g.40gb".
struct SliceProfile {
  std::string name;         ///< NVIDIA MIG naming, e.g. "1g.10gb"
  int compute_units = 0;    ///< of kComputeUnitsPerGpu
  int memory_slots = 0;     ///< contiguous memory slots it occupies
  int sm_count = 0;         ///< streaming multiprocessors of the slice
  int64_t memory_mib = 0;   ///< device memory of the slice
  std::vector<int> starts;  ///< valid first memory slot of each placement

  /// Occupancy mask of the placement that begins at `start`.
  uint8_t MaskAt(int start) const {
    return static_cast<uint8_t>(((1u << memory_slots) - 1u) << start);
  }
  bool IsWholeGpu() const { return compute_units == kComputeUnitsPerGpu; }
  /// Whether the placement table has a placement of this profile beginning at `start`.
  bool CanStartAt(int start) const;
};

/// A GPU model: the table the scheduler and worker share.
struct GpuModel {
  std::string name;  ///< e.g. "H100-80GB"
  int sm_count = 0;
  int64_t memory_mib = 0;
  std::vector<SliceProfile> profiles;  ///< smallest first; the last is the whole GPU

  const SliceProfile* FindProfile(absl::string_view profile_name) const;
  const SliceProfile& WholeGpu() const { return profiles.back(); }
};

/// All known models. Stable order; data only.
const std::vector<GpuModel>& GpuModels();

/// Looks up a model by name (case-insensitive; "h100" and "H100-80GB" both match H100-80GB).
const GpuModel* FindGpuModel(absl::string_view name);

/// Adds instance `profile`@`start` to a MIG geometry of `model` whose instances already
/// cover the slots in `*taken`, and returns its profile; or returns null with `*why`
/// saying what is wrong: not a slice profile of the model (or the whole GPU), a start the
/// placement table lacks, or an overlap with the instances before it.
const SliceProfile* AddMigInstance(const GpuModel& model, absl::string_view profile, int start,
                                   uint8_t* taken, std::string* why);

/// Compute units a placement holds on each of its GPUs: those of slice `profile` of
/// `model`, else a whole GPU's (no or an unknown profile: whole GPUs; null model too).
int PlacementUnitsPerGpu(const GpuModel* model, absl::string_view profile);

/// True when some known model has a profile with this name.
bool IsKnownSliceProfile(absl::string_view profile_name);

/// GPU-milliseconds for `wall_ms` on a slice of `compute_units` (of 7) on `gpus` GPUs:
/// wall_ms * compute_units * gpus / 7, truncated. Integers only.
inline int64_t GpuMilliseconds(int64_t wall_ms, int compute_units, int gpus) {
  return static_cast<int64_t>(static_cast<Int128>(wall_ms) * compute_units * gpus /
                              kComputeUnitsPerGpu);
}

}  // namespace surplus
