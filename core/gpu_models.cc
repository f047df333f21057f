#include "surplus/gpu_models.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace surplus {
namespace {

// Placements follow NVIDIA's MIG placement tables (nvidia-smi mig -lgipp): the start
// is the first memory slice, the profile occupies `memory_slots` from there.
std::vector<GpuModel> BuildModels() {
  std::vector<GpuModel> models;
  models.push_back(GpuModel{
      "H100-80GB",
      132,
      81559,
      {
          {"1g.10gb", 1, 1, 16, 9984, {0, 1, 2, 3, 4, 5, 6}},
          {"1g.20gb", 1, 2, 16, 19968, {0, 2, 4, 6}},
          {"2g.20gb", 2, 2, 32, 19968, {0, 2, 4}},
          {"3g.40gb", 3, 4, 60, 40192, {0, 4}},
          {"4g.40gb", 4, 4, 64, 40192, {0}},
          {"7g.80gb", 7, 8, 132, 81559, {0}},
      }});
  models.push_back(GpuModel{
      "H200-141GB",
      132,
      144384,
      {
          {"1g.18gb", 1, 1, 16, 17664, {0, 1, 2, 3, 4, 5, 6}},
          {"1g.35gb", 1, 2, 16, 35584, {0, 2, 4, 6}},
          {"2g.35gb", 2, 2, 32, 35584, {0, 2, 4}},
          {"3g.71gb", 3, 4, 60, 72192, {0, 4}},
          {"4g.71gb", 4, 4, 64, 72192, {0}},
          {"7g.141gb", 7, 8, 132, 144384, {0}},
      }});
  models.push_back(GpuModel{
      "A100-80GB",
      108,
      81920,
      {
          {"1g.10gb", 1, 1, 14, 9728, {0, 1, 2, 3, 4, 5, 6}},
          {"1g.20gb", 1, 2, 14, 19968, {0, 2, 4, 6}},
          {"2g.20gb", 2, 2, 28, 19968, {0, 2, 4}},
          {"3g.40gb", 3, 4, 42, 40192, {0, 4}},
          {"4g.40gb", 4, 4, 56, 40192, {0}},
          {"7g.80gb", 7, 8, 98, 81920, {0}},
      }});
  return models;
}

}  // namespace

bool SliceProfile::CanStartAt(int start) const {
  return std::find(starts.begin(), starts.end(), start) != starts.end();
}

const SliceProfile* AddMigInstance(const GpuModel& model, absl::string_view profile, int start,
                                   uint8_t* taken, std::string* why) {
  const SliceProfile* prof = model.FindProfile(profile);
  if (prof == nullptr || prof->IsWholeGpu()) {
    *why = absl::StrCat("'", profile.substr(0, 32), "' is not a slice profile of ", model.name);
    return nullptr;
  }
  if (!prof->CanStartAt(start)) {
    *why = absl::StrCat(prof->name, " cannot start at memory slot ", start);
    return nullptr;
  }
  if ((prof->MaskAt(start) & *taken) != 0) {
    *why = absl::StrCat("instances overlap at ", prof->name, "@", start);
    return nullptr;
  }
  *taken |= prof->MaskAt(start);
  return prof;
}

const SliceProfile* GpuModel::FindProfile(absl::string_view profile_name) const {
  for (const auto& p : profiles) {
    if (p.name == profile_name) return &p;
  }
  return nullptr;
}

int PlacementUnitsPerGpu(const GpuModel* model, absl::string_view profile) {
  const SliceProfile* p = model != nullptr ? model->FindProfile(profile) : nullptr;
  return p != nullptr ? p->compute_units : kComputeUnitsPerGpu;
}

const std::vector<GpuModel>& GpuModels() {
  static const std::vector<GpuModel>* models = new std::vector<GpuModel>(BuildModels());
  return *models;
}

const GpuModel* FindGpuModel(absl::string_view name) {
  for (const auto& m : GpuModels()) {
    if (absl::EqualsIgnoreCase(m.name, name)) return &m;
  }
  // Short family names: "h100" -> "H100-80GB".
  for (const auto& m : GpuModels()) {
    if (absl::StartsWithIgnoreCase(m.name, name) && name.size() >= 4 &&
        m.name.size() > name.size() && m.name[name.size()] == '-') {
      return &m;
    }
  }
  return nullptr;
}

bool IsKnownSliceProfile(absl::string_view profile_name) {
  return std::any_of(GpuModels().begin(), GpuModels().end(),
                     [&](const GpuModel& m) { return m.FindProfile(profile_name) != nullptr; });
}

}  // namespace surplus
