#include "gpu_worker/cuda/gpu_rules.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {
namespace {

// True when `total_mib` is within 5% of `model_mib`: NVML reports slightly different
// totals across driver versions and ECC settings.
bool MemoryMatches(int64_t total_mib, int64_t model_mib) {
  return total_mib * 100 >= model_mib * 95 && total_mib * 100 <= model_mib * 105;
}

}  // namespace

std::string ModelNameForDevice(absl::string_view nvml_name, int64_t memory_total_mib) {
  const std::string name = absl::AsciiStrToLower(nvml_name);
  struct Rule {
    const char* family;  // substring of the lower-case NVML name
    const char* model;   // surplus GpuModel name
    const char* exclude; // parts of the family with another SM count or memory
  };
  // The H100 PCIe has 114 SMs and the H100 NVL 94 GB: neither is an H100-80GB.
  static const Rule kRules[] = {
      {"h100", "H100-80GB", "pcie"},
      {"h200", "H200-141GB", nullptr},
      {"a100", "A100-80GB", nullptr},
  };
  for (const Rule& rule : kRules) {
    if (!absl::StrContains(name, rule.family)) continue;
    if (rule.exclude != nullptr && absl::StrContains(name, rule.exclude)) return "";
    const GpuModel* model = FindGpuModel(rule.model);
    if (model == nullptr || !MemoryMatches(memory_total_mib, model->memory_mib)) return "";
    return model->name;
  }
  return "";
}

std::string MigProfileFromDeviceName(absl::string_view mig_device_name) {
  // The profile is the last token shaped like "<n>g.<m>gb" (optionally with a suffix such
  // as "+me"), e.g. "NVIDIA H100 80GB HBM3 MIG 1g.10gb".
  std::vector<absl::string_view> tokens = absl::StrSplit(mig_device_name, ' ', absl::SkipEmpty());
  for (auto it = tokens.rbegin(); it != tokens.rend(); ++it) {
    absl::string_view t = *it;
    size_t g = t.find("g.");
    if (g == absl::string_view::npos || g == 0) continue;
    int units = 0;
    if (!absl::SimpleAtoi(t.substr(0, g), &units)) continue;
    if (!absl::StrContains(absl::AsciiStrToLower(t.substr(g)), "gb")) continue;
    return std::string(t);
  }
  return "";
}

bool IsApplicationXid(int xid) {
  // 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped processing,
  // 45 preemptive cleanup, 68 video processor exception, 109 context switch timeout:
  // all raised by a faulty program, not by a failing GPU.
  switch (xid) {
    case 13:
    case 31:
    case 43:
    case 45:
    case 68:
    case 109:
      return true;
    default:
      return false;
  }
}

std::string FormatGpuUuid(const unsigned char b[16]) {
  char buf[48];
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
                b[13], b[14], b[15]);
  return buf;
}

void ApplyHealth(const HealthInputs& in, GpuTelemetry* gpu) {
  std::vector<std::string> reasons;
  if (in.lost) reasons.push_back("GPU fell off the bus (NVML: GPU is lost)");
  if (in.reset_required && !in.lost) reasons.push_back("GPU needs a reset (NVML: reset required)");
  if (in.critical_xid != 0) reasons.push_back(absl::StrCat("critical XID ", in.critical_xid));
  if (in.ecc_uncorrected > 0) {
    reasons.push_back(
        absl::StrCat(in.ecc_uncorrected, " volatile uncorrected ECC error(s)"));
  }
  gpu->healthy = reasons.empty();
  gpu->health_reason = absl::StrJoin(reasons, "; ");
}

int MpsActiveThreadPercentage(int compute_units) {
  compute_units = std::clamp(compute_units, 1, kComputeUnitsPerGpu);
  // round(100 * cu / 7): 1 -> 14, 2 -> 29, 3 -> 43, 4 -> 57, 7 -> 100.
  return (100 * compute_units + kComputeUnitsPerGpu / 2) / kComputeUnitsPerGpu;
}

std::map<std::string, std::string> MpsClientEnv(const std::string& gpu_uuid,
                                                const std::string& pipe_dir,
                                                const std::string& log_dir, int compute_units,
                                                int64_t memory_mib) {
  std::map<std::string, std::string> env;
  // The daemon sees only this GPU; naming it by UUID (not index) is what NVIDIA
  // recommends, as indices are remapped by the MPS server.
  env["CUDA_VISIBLE_DEVICES"] = gpu_uuid;
  env["CUDA_MPS_PIPE_DIRECTORY"] = pipe_dir;
  env["CUDA_MPS_LOG_DIRECTORY"] = log_dir;
  env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] =
      absl::StrCat(MpsActiveThreadPercentage(compute_units));
  // Device 0 is the only device the client sees.
  env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = absl::StrCat("0=", memory_mib, "M");
  return env;
}

absl::StatusOr<GreenSlicePlan> PlanGreenSlice(const SmSplit& split, int slot_start,
                                              int memory_slots, int sm_count, bool whole_gpu) {
  if (split.groups <= 0 || split.group_sms <= 0) {
    return absl::InvalidArgumentError("empty SM split");
  }
  GreenSlicePlan plan;
  if (whole_gpu) {
    plan.first_group = 0;
    plan.group_count = split.groups;
    plan.include_remaining = split.remaining_sms > 0;
    plan.sm_count = split.groups * split.group_sms + split.remaining_sms;
    return plan;
  }
  if (slot_start < 0 || memory_slots <= 0 || slot_start + memory_slots > kMemorySlotsPerGpu) {
    return absl::InvalidArgumentError(
        absl::StrCat("placement ", slot_start, "+", memory_slots, " outside the GPU"));
  }
  if (sm_count <= 0) return absl::InvalidArgumentError("slice without SMs");
  // Slot s < 7 owns [s * per, (s + 1) * per); slot 7 owns [7 * per, groups) + remainder.
  const int per = split.groups / kComputeUnitsPerGpu;
  auto slot_first = [&](int slot) {
    return slot >= kMemorySlotsPerGpu ? split.groups : std::min(slot, kComputeUnitsPerGpu) * per;
  };
  const int slot_end = slot_start + memory_slots;
  const int owned_first = slot_first(slot_start);
  const int owned = slot_first(slot_end) - owned_first;
  const bool owns_last_slot = slot_end == kMemorySlotsPerGpu;
  if (owned <= 0 && !(owns_last_slot && split.remaining_sms > 0)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "GPU split into ", split.groups, " SM groups is too coarse for a ", memory_slots,
        "-slot slice at slot ", slot_start));
  }
  const int wanted = (sm_count + split.group_sms - 1) / split.group_sms;
  plan.first_group = owned_first;
  plan.group_count = std::max(0, std::min(wanted, owned));
  plan.sm_count = plan.group_count * split.group_sms;
  if (owns_last_slot && plan.sm_count < sm_count && split.remaining_sms > 0) {
    plan.include_remaining = true;
    plan.sm_count += split.remaining_sms;
  }
  if (plan.sm_count < sm_count) {
    // The driver may split into fewer groups than SMs / group size (symmetric partitions
    // only): a slice short of its SMs would be sold for less than it is.
    return absl::FailedPreconditionError(absl::StrCat(
        "GPU split into ", split.groups, " groups of ", split.group_sms, " SMs gives the ",
        memory_slots, "-slot slice at slot ", slot_start, " only ", plan.sm_count, " of its ",
        sm_count, " SMs"));
  }
  return plan;
}

absl::StatusOr<uint8_t> SliceMask(const std::string& model_name, const SliceRequest& request) {
  const GpuModel* model = FindGpuModel(model_name);
  if (model == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("GPU model '", model_name, "' has no slice table"));
  }
  const SliceProfile* profile = model->FindProfile(request.slice_profile);
  if (profile == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("profile '", request.slice_profile,
                                                   "' is not a profile of ", model->name));
  }
  if (profile->IsWholeGpu()) return kFullGpuMask;
  if (!profile->CanStartAt(request.slot_start)) {
    return absl::InvalidArgumentError(absl::StrCat(
        profile->name, " cannot start at memory slot ", request.slot_start, " on ", model->name));
  }
  return profile->MaskAt(request.slot_start);
}

std::vector<GpuProcess> OwnerProcesses(const std::vector<GpuProcess>& processes,
                                       const std::function<bool(int64_t)>& is_worker_process) {
  std::vector<GpuProcess> owner;
  for (const GpuProcess& p : processes) {
    if (!is_worker_process(p.pid)) owner.push_back(p);
  }
  return owner;
}

std::optional<int64_t> ParentPid(int64_t pid, const std::string& proc_root) {
  std::ifstream in(absl::StrCat(proc_root, "/", pid, "/stat"));
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string stat = ss.str();
  // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so parse after
  // the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(close + 1), ' ', absl::SkipEmpty());
  int64_t ppid = 0;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &ppid)) return std::nullopt;
  return ppid;
}

}  // namespace surplus::worker
