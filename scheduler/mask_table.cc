#include "scheduler/mask_table.h"

#include <algorithm>

namespace surplus::scheduler {
namespace {

// Best packing value of free mask s using the profiles in `allowed`, where each placement
// contributes value(profile). Placements are contiguous runs of slots, so the placement
// that covers the lowest free slot must start at it: a DP over masks in increasing order
// (every sub-mask is numerically smaller) is exact.
std::array<int8_t, 256> PackValue(const GpuModel& model, const std::vector<int>& allowed,
                                  bool count_instances) {
  std::array<int8_t, 256> best{};
  for (int s = 1; s < 256; ++s) {
    const int low = __builtin_ctz(static_cast<unsigned>(s));
    int value = best[s & ~(1 << low)];  // leave the lowest free slot unused
    for (int p : allowed) {
      const SliceProfile& prof = model.profiles[p];
      for (int start : prof.starts) {
        if (start != low) continue;
        const int m = prof.MaskAt(start);
        if ((m & s) != m) continue;
        const int gain = count_instances ? 1 : prof.compute_units;
        value = std::max(value, gain + best[s & ~m]);
      }
    }
    best[s] = static_cast<int8_t>(value);
  }
  return best;
}

std::vector<MaskTable> BuildTables() {
  std::vector<MaskTable> tables;
  for (const GpuModel& model : GpuModels()) {
    MaskTable t;
    t.model = &model;
    std::vector<int> all;
    for (int p = 0; p < static_cast<int>(model.profiles.size()); ++p) all.push_back(p);
    t.capacity = PackValue(model, all, /*count_instances=*/false);
    for (int p : all) t.fit_count.push_back(PackValue(model, {p}, /*count_instances=*/true));
    t.whole_profile = static_cast<int>(model.profiles.size()) - 1;
    tables.push_back(std::move(t));
  }
  return tables;
}

}  // namespace

const MaskTable* MaskTableFor(const GpuModel* model) {
  static const std::vector<MaskTable>* tables = new std::vector<MaskTable>(BuildTables());
  for (const MaskTable& t : *tables) {
    if (t.model == model) return &t;
  }
  return nullptr;
}

}  // namespace surplus::scheduler
