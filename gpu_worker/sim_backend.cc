#include "gpu_worker/sim_backend.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "surplus/gpu_models.h"

namespace surplus::worker {

absl::StatusOr<std::vector<OwnerTraceEvent>> ParseOwnerTrace(absl::string_view csv) {
  std::vector<OwnerTraceEvent> events;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(csv, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#") || absl::StartsWith(line, "t_ms")) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    OwnerTraceEvent e;
    int busy = 0;
    if ((fields.size() != 3 && fields.size() != 4) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[0]), &e.t_ms) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[1]), &e.gpu_index) ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[2]), &busy) || e.t_ms < 0 ||
        e.gpu_index < 0 || (busy != 0 && busy != 1) ||
        (fields.size() == 4 && (!absl::SimpleAtoi(absl::StripAsciiWhitespace(fields[3]), &e.xid) || e.xid < 0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "owner trace line ", line_no, ": expected t_ms,gpu_index,busy[,xid] (busy 0 or 1, xid >= 0), got '",
          line.substr(0, 80), "'"));
    }
    e.busy = busy == 1;
    events.push_back(e);
  }
  std::stable_sort(events.begin(), events.end(),
                   [](const OwnerTraceEvent& a, const OwnerTraceEvent& b) { return a.t_ms < b.t_ms; });
  return events;
}

absl::StatusOr<std::vector<OwnerTraceEvent>> LoadOwnerTrace(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read owner trace ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto events = ParseOwnerTrace(ss.str());
  if (!events.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", events.status().message()));
  }
  return events;
}

int SimActiveThreadPercentage(int compute_units) {
  compute_units = std::clamp(compute_units, 1, kComputeUnitsPerGpu);
  return (100 * compute_units + kComputeUnitsPerGpu / 2) / kComputeUnitsPerGpu;
}

absl::StatusOr<std::unique_ptr<SimBackend>> SimBackend::Create(SimBackendOptions options) {
  const GpuModel* model = FindGpuModel(options.gpu_model);
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown GPU model '", options.gpu_model, "'"));
  }
  if (options.gpus < 1 || options.gpus > 64) {
    return absl::InvalidArgumentError("a node has 1 to 64 GPUs");
  }
  options.gpu_model = model->name;
  if (!options.elapsed_ms) {
    const auto start = std::chrono::steady_clock::now();
    options.elapsed_ms = [start] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - start)
          .count();
    };
  }
  return std::unique_ptr<SimBackend>(new SimBackend(std::move(options), model->memory_mib));
}

SimBackend::SimBackend(SimBackendOptions options, int64_t memory_total_mib)
    : options_(std::move(options)), memory_total_mib_(memory_total_mib) {}

bool SimBackend::OwnerBusyAt(int index, int64_t t_ms) const {
  bool busy = false;
  for (const OwnerTraceEvent& e : options_.owner_trace) {
    if (e.t_ms > t_ms) break;  // sorted by time
    if (e.gpu_index == index) busy = e.busy;
  }
  return busy;
}

int SimBackend::XidAt(int index, int64_t t_ms) const {
  for (const OwnerTraceEvent& e : options_.owner_trace) {
    if (e.t_ms > t_ms) break;
    if (e.gpu_index == index && e.xid > 0) return e.xid;
  }
  return 0;
}

absl::StatusOr<std::vector<GpuTelemetry>> SimBackend::Discover() {
  std::vector<GpuTelemetry> gpus;
  for (int i = 0; i < options_.gpus; ++i) {
    GpuTelemetry& g = gpus.emplace_back();
    g.index = i;
    g.uuid = absl::StrCat("GPU-sim-", options_.node, "-", i);
    g.model = options_.gpu_model;
    g.memory_total_mib = memory_total_mib_;
  }
  return gpus;
}

absl::StatusOr<std::vector<GpuTelemetry>> SimBackend::Sample() {
  absl::StatusOr<std::vector<GpuTelemetry>> gpus = Discover();
  const int64_t now = options_.elapsed_ms();
  absl::MutexLock lock(&mu_);
  for (GpuTelemetry& g : *gpus) {
    int tenant_units = 0;
    int64_t memory = 0;
    for (const auto& [job, slice] : slices_) {
      const auto& idx = slice.request.gpu_indices;
      if (std::find(idx.begin(), idx.end(), g.index) == idx.end()) continue;
      tenant_units += slice.request.compute_units;
      memory += slice.request.memory_mib > 0 ? slice.request.memory_mib : memory_total_mib_;
    }
    int util = 100 * std::min(tenant_units, kComputeUnitsPerGpu) / kComputeUnitsPerGpu;
    if (OwnerBusyAt(g.index, now)) {
      util += kOwnerBusyUtilPct;
      memory += kOwnerBusyMemoryMib;
      g.processes.push_back({kSimOwnerPidBase + g.index, kOwnerBusyMemoryMib});
    }
    if (const int xid = XidAt(g.index, now); xid > 0) {
      g.last_xid = xid;
      g.healthy = false;
      g.health_reason = absl::StrCat("XID ", xid, " (simulated)");
    }
    g.utilization_pct = std::min(util, 100);
    g.memory_used_mib = std::min(memory, memory_total_mib_);
    g.temperature_c = 35 + g.utilization_pct / 2;
    g.power_mw = 70'000 + int64_t{6'000} * g.utilization_pct;
  }
  return gpus;
}

absl::StatusOr<PreparedSlice> SimBackend::PrepareSlice(const SliceRequest& request) {
  if (request.gpu_indices.empty()) return absl::InvalidArgumentError("a slice needs GPUs");
  for (int g : request.gpu_indices) {
    if (g < 0 || g >= options_.gpus) {
      return absl::InvalidArgumentError(
          absl::StrCat("GPU ", g, " is not on this node (", options_.gpus, " GPUs)"));
    }
  }
  const GpuModel* model = FindGpuModel(options_.gpu_model);
  const SliceProfile* profile =
      request.slice_profile.empty() ? nullptr : model->FindProfile(request.slice_profile);
  const bool whole = profile == nullptr || profile->IsWholeGpu();
  if (!whole && request.gpu_indices.size() != 1) {
    return absl::InvalidArgumentError("a slice smaller than a GPU lives on one GPU");
  }
  Slice slice;
  slice.request = request;
  if (whole) {
    slice.mask = kFullGpuMask;
  } else {
    if (request.slot_start < 0 ||
        request.slot_start + profile->memory_slots > kMemorySlotsPerGpu) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", request.slot_start, " of ",
                                                     profile->name, " is outside the GPU"));
    }
    slice.mask = profile->MaskAt(request.slot_start);
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [job, other] : slices_) {
    if (job == request.job_id) continue;  // prepared again: replaced below
    for (int g : request.gpu_indices) {
      const auto& og = other.request.gpu_indices;
      if (std::find(og.begin(), og.end(), g) != og.end() && (other.mask & slice.mask) != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("slice overlaps the slice of job ", job, " on GPU ", g));
      }
    }
  }
  slices_[request.job_id] = slice;

  PreparedSlice prepared;
  prepared.isolation = "sim";
  prepared.env["CUDA_VISIBLE_DEVICES"] = absl::StrJoin(request.gpu_indices, ",");
  prepared.env["SURPLUS_GPU_MODEL"] = options_.gpu_model;
  prepared.env["SURPLUS_SLICE_PROFILE"] =
      request.slice_profile.empty() ? model->WholeGpu().name : request.slice_profile;
  prepared.env["SURPLUS_SLICE_SLOT_START"] = absl::StrCat(whole ? 0 : request.slot_start);
  if (!whole) {
    prepared.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] =
        absl::StrCat(SimActiveThreadPercentage(request.compute_units));
    if (request.memory_mib > 0) {
      prepared.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = absl::StrCat("0=", request.memory_mib, "M");
    }
  }
  return prepared;
}

void SimBackend::ReleaseSlice(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  slices_.erase(job_id);
}

absl::StatusOr<BuiltinResult> SimBackend::RunBuiltin(
    const BuiltinRequest& request, const std::atomic<bool>& /*stop*/,
    const std::function<void(const std::string&)>& /*log*/) {
  return absl::FailedPreconditionError(
      absl::StrCat(request.kind, " needs a GPU: run the worker with --backend cuda"));
}

}  // namespace surplus::worker
