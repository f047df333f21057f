#pragma once
// Static facts about a GPU model's slice placement table, precomputed for every one of the
// 256 free-slot masks a GPU can be in. Bit i of a free mask = memory slot i is free.

#include <array>
#include <cstdint>
#include <vector>

#include "surplus/gpu_models.h"

namespace surplus::scheduler {

struct MaskTable {
  const GpuModel* model = nullptr;
  /// Most compute units that non-overlapping valid placements (any profiles) can cover
  /// inside free mask s. capacity[0xFF] == kComputeUnitsPerGpu.
  std::array<int8_t, 256> capacity{};
  /// Per profile (model order): most instances of that profile that fit in free mask s.
  std::vector<std::array<int8_t, 256>> fit_count;
  /// Index of the whole-GPU profile (the last one).
  int whole_profile = 0;
};

/// Table of `model`, which must be one of GpuModels(); nullptr otherwise.
const MaskTable* MaskTableFor(const GpuModel* model);

}  // namespace surplus::scheduler
