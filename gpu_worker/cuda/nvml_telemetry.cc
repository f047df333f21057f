#include "gpu_worker/cuda/nvml_telemetry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gpu_worker/cuda/gpu_rules.h"

namespace surplus::worker {
namespace {

constexpr int64_t kMiB = 1024 * 1024;
// Longest single wait of the sampler thread, so that shutdown is prompt.
constexpr unsigned int kMaxWaitMs = 200;

}  // namespace

absl::StatusOr<std::unique_ptr<NvmlTelemetry>> NvmlTelemetry::Create(
    const NvmlTelemetryOptions& options) {
  auto nvml = NvmlLibrary::Load(options.library_path);
  if (!nvml.ok()) return nvml.status();
  std::unique_ptr<NvmlTelemetry> t(new NvmlTelemetry(*std::move(nvml), options));
  if (absl::Status s = t->Init(); !s.ok()) return s;
  return t;
}

NvmlTelemetry::NvmlTelemetry(std::unique_ptr<NvmlLibrary> nvml,
                             const NvmlTelemetryOptions& options)
    : nvml_(std::move(nvml)), options_(options) {}

absl::Status NvmlTelemetry::Init() {
  const NvmlApi& api = nvml_->api();
  unsigned int count = 0;
  nvmlReturn_t rc = api.DeviceGetCount(&count);
  if (rc != kNvmlSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("no NVIDIA GPU: nvmlDeviceGetCount failed: ", nvml_->ErrorText(rc)));
  }
  if (count == 0) return absl::FailedPreconditionError("no NVIDIA GPU: NVML sees 0 devices");
  for (unsigned int i = 0; i < count; ++i) {
    Device d;
    d.index = static_cast<int>(i);
    rc = api.DeviceGetHandleByIndex(i, &d.handle);
    if (rc != kNvmlSuccess) {
      return absl::UnavailableError(
          absl::StrCat("GPU ", i, ": nvmlDeviceGetHandleByIndex: ", nvml_->ErrorText(rc)));
    }
    char buf[kNvmlDeviceNameBufferSize] = {};
    if (api.DeviceGetName(d.handle, buf, sizeof(buf)) == kNvmlSuccess) d.name = buf;
    char uuid[kNvmlDeviceUuidBufferSize] = {};
    if (api.DeviceGetUUID(d.handle, uuid, sizeof(uuid)) == kNvmlSuccess) d.uuid = uuid;
    NvmlMemory mem{};
    if (api.DeviceGetMemoryInfo(d.handle, &mem) == kNvmlSuccess) {
      d.memory_total_mib = static_cast<int64_t>(mem.total / kMiB);
    }
    d.model = ModelNameForDevice(d.name, d.memory_total_mib);
    // An unknown part keeps its NVML name: the control plane then sees a model it has no
    // table for and offers nothing on it.
    if (d.model.empty()) d.model = d.name;
    devices_.push_back(std::move(d));
  }

  // Critical XID events, where the driver supports them. Failure only loses XID reports.
  if (api.EventSetCreate != nullptr && api.DeviceRegisterEvents != nullptr &&
      api.EventSetWait != nullptr && api.EventSetCreate(&event_set_) == kNvmlSuccess) {
    int registered = 0;
    for (Device& d : devices_) {
      unsigned long long supported = kNvmlEventTypeXidCriticalError;
      if (api.DeviceGetSupportedEventTypes != nullptr &&
          api.DeviceGetSupportedEventTypes(d.handle, &supported) != kNvmlSuccess) {
        continue;
      }
      if ((supported & kNvmlEventTypeXidCriticalError) == 0) continue;
      if (api.DeviceRegisterEvents(d.handle, kNvmlEventTypeXidCriticalError, event_set_) ==
          kNvmlSuccess) {
        ++registered;
      }
    }
    if (registered == 0) {
      if (api.EventSetFree != nullptr) api.EventSetFree(event_set_);
      event_set_ = nullptr;
    }
  }

  {
    std::vector<GpuTelemetry> first = SampleNow();
    std::lock_guard<std::mutex> lock(latest_mu_);
    latest_ = std::move(first);
  }
  if (options_.sample_interval.count() > 0) sampler_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

NvmlTelemetry::~NvmlTelemetry() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (sampler_.joinable()) sampler_.join();
  if (event_set_ != nullptr && nvml_->api().EventSetFree != nullptr) {
    nvml_->api().EventSetFree(event_set_);
  }
}

std::vector<GpuTelemetry> NvmlTelemetry::Discover() {
  std::vector<GpuTelemetry> out;
  for (Device& d : devices_) out.push_back(SampleDevice(d, /*full=*/false));
  return out;
}

std::vector<GpuTelemetry> NvmlTelemetry::Latest() {
  if (!sampler_.joinable()) return SampleNow();
  std::lock_guard<std::mutex> lock(latest_mu_);
  return latest_;
}

std::string NvmlTelemetry::DeviceName(int index) const {
  if (index < 0 || index >= device_count()) return "";
  return devices_[index].name;
}

std::vector<GpuTelemetry> NvmlTelemetry::SampleNow() {
  DrainEvents(0);
  std::vector<GpuTelemetry> out;
  out.reserve(devices_.size());
  for (Device& d : devices_) out.push_back(SampleDevice(d, /*full=*/true));
  samples_taken_.fetch_add(1);
  return out;
}

GpuTelemetry NvmlTelemetry::SampleDevice(Device& d, bool full) {
  const NvmlApi& api = nvml_->api();
  GpuTelemetry t;
  t.index = d.index;
  t.uuid = d.uuid;
  t.model = d.model;
  t.memory_total_mib = d.memory_total_mib;
  bool lost = false, reset_required = false;
  auto note = [&](nvmlReturn_t rc) {
    if (rc == kNvmlErrorGpuIsLost) lost = true;
    if (rc == kNvmlErrorResetRequired) reset_required = true;
    return rc == kNvmlSuccess;
  };

  NvmlMemory mem{};
  if (note(api.DeviceGetMemoryInfo(d.handle, &mem))) {
    t.memory_total_mib = static_cast<int64_t>(mem.total / kMiB);
    t.memory_used_mib = static_cast<int64_t>(mem.used / kMiB);
  }
  if (api.DeviceGetMigMode != nullptr) {
    unsigned int current = 0, pending = 0;
    if (note(api.DeviceGetMigMode(d.handle, &current, &pending))) {
      t.mig_enabled = current == kNvmlDeviceMigEnable;
    }
  }
  std::vector<nvmlDevice_t> mig_handles;
  if (t.mig_enabled) ReadMig(d, &t, &lost, &mig_handles);
  if (full) {
    if (api.DeviceGetUtilizationRates != nullptr) {
      NvmlUtilization u{};
      // MIG-enabled GPUs do not report utilization (NOT_SUPPORTED): -1 says so.
      t.utilization_pct = note(api.DeviceGetUtilizationRates(d.handle, &u))
                              ? static_cast<int>(u.gpu)
                              : -1;
    }
    unsigned int value = 0;
    if (api.DeviceGetTemperature != nullptr &&
        note(api.DeviceGetTemperature(d.handle, kNvmlTemperatureGpu, &value))) {
      t.temperature_c = static_cast<int>(value);
    }
    if (api.DeviceGetPowerUsage != nullptr && note(api.DeviceGetPowerUsage(d.handle, &value))) {
      t.power_mw = value;
    }
    unsigned long long ecc = 0;
    if (api.DeviceGetTotalEccErrors != nullptr &&
        note(api.DeviceGetTotalEccErrors(d.handle, kNvmlMemoryErrorTypeUncorrected,
                                         kNvmlVolatileEcc, &ecc))) {
      t.ecc_uncorrected = ecc;
    }
    ReadProcesses(d.handle, &t, &lost);
    // Without privileges the GPU of a MIG node lists nothing; its instances list their own.
    for (nvmlDevice_t mig : mig_handles) ReadProcesses(mig, &t, &lost);
  }
  HealthInputs health;
  health.lost = lost;
  health.reset_required = reset_required;
  health.ecc_uncorrected = t.ecc_uncorrected;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    t.last_xid = d.last_xid;
    health.critical_xid = d.critical_xid;
  }
  ApplyHealth(health, &t);
  return t;
}

void NvmlTelemetry::ReadMig(Device& d, GpuTelemetry* out, bool* lost,
                            std::vector<nvmlDevice_t>* handles) {
  const NvmlApi& api = nvml_->api();
  if (api.DeviceGetMaxMigDeviceCount == nullptr || api.DeviceGetMigDeviceHandleByIndex == nullptr) {
    return;
  }
  unsigned int max_count = 0;
  nvmlReturn_t rc = api.DeviceGetMaxMigDeviceCount(d.handle, &max_count);
  if (rc != kNvmlSuccess) {
    if (rc == kNvmlErrorGpuIsLost) *lost = true;
    return;
  }
  for (unsigned int i = 0; i < max_count; ++i) {
    nvmlDevice_t mig = nullptr;
    if (api.DeviceGetMigDeviceHandleByIndex(d.handle, i, &mig) != kNvmlSuccess) continue;
    handles->push_back(mig);
    MigInstance inst;
    char uuid[kNvmlDeviceUuidBufferSize] = {};
    if (api.DeviceGetUUID(mig, uuid, sizeof(uuid)) == kNvmlSuccess) inst.uuid = uuid;
    char name[kNvmlDeviceNameBufferSize] = {};
    if (api.DeviceGetName(mig, name, sizeof(name)) == kNvmlSuccess) {
      inst.profile = MigProfileFromDeviceName(name);
    }
    // The placement comes from the GPU instance; -1 when NVML will not tell (it needs
    // privileges on some drivers).
    inst.slot_start = -1;
    unsigned int gi_id = 0;
    nvmlGpuInstance_t gi = nullptr;
    NvmlGpuInstanceInfo info{};
    if (api.DeviceGetGpuInstanceId != nullptr && api.DeviceGetGpuInstanceById != nullptr &&
        api.GpuInstanceGetInfo != nullptr &&
        api.DeviceGetGpuInstanceId(mig, &gi_id) == kNvmlSuccess &&
        api.DeviceGetGpuInstanceById(d.handle, gi_id, &gi) == kNvmlSuccess &&
        api.GpuInstanceGetInfo(gi, &info) == kNvmlSuccess) {
      inst.slot_start = static_cast<int>(info.placement.start);
    }
    out->mig_instances.push_back(std::move(inst));
  }
  std::sort(out->mig_instances.begin(), out->mig_instances.end(),
            [](const MigInstance& a, const MigInstance& b) { return a.slot_start < b.slot_start; });
}

void NvmlTelemetry::ReadProcesses(nvmlDevice_t handle, GpuTelemetry* out, bool* lost) {
  const NvmlApi& api = nvml_->api();
  auto read = [&](nvmlReturn_t (*fn)(nvmlDevice_t, unsigned int*, NvmlProcessInfo*)) {
    if (fn == nullptr) return;
    std::vector<NvmlProcessInfo> infos(32);
    for (int attempt = 0; attempt < 4; ++attempt) {
      unsigned int count = static_cast<unsigned int>(infos.size());
      nvmlReturn_t rc = fn(handle, &count, infos.data());
      if (rc == kNvmlErrorInsufficientSize) {
        infos.resize(std::max<size_t>(count + 16, infos.size() * 2));
        continue;
      }
      if (rc == kNvmlErrorGpuIsLost) *lost = true;
      if (rc != kNvmlSuccess) return;
      for (unsigned int i = 0; i < count; ++i) {
        const int64_t pid = infos[i].pid;
        auto same = [pid](const GpuProcess& p) { return p.pid == pid; };
        if (std::any_of(out->processes.begin(), out->processes.end(), same)) continue;
        GpuProcess p;
        p.pid = pid;
        p.used_memory_mib = infos[i].usedGpuMemory == kNvmlValueNotAvailable
                                ? 0
                                : static_cast<int64_t>(infos[i].usedGpuMemory / kMiB);
        out->processes.push_back(p);
      }
      return;
    }
  };
  read(api.DeviceGetComputeRunningProcesses);
  // MPS clients are listed separately by recent drivers.
  read(api.DeviceGetMPSComputeRunningProcesses);
}

bool NvmlTelemetry::DrainEvents(unsigned int timeout_ms) {
  if (event_set_ == nullptr) return false;
  const NvmlApi& api = nvml_->api();
  unsigned int wait = timeout_ms;
  for (;;) {
    NvmlEventData data{};
    nvmlReturn_t rc = api.EventSetWait(event_set_, &data, wait);
    // Timeout: waited, nothing (more) to read. Any other error came back without waiting.
    if (rc == kNvmlErrorTimeout) return true;
    if (rc != kNvmlSuccess) return wait == 0;
    wait = 0;  // after the first event, only drain what is queued
    if ((data.eventType & kNvmlEventTypeXidCriticalError) == 0) continue;
    const int xid = static_cast<int>(data.eventData);
    std::lock_guard<std::mutex> lock(state_mu_);
    for (Device& d : devices_) {
      if (d.handle != data.device) continue;
      d.last_xid = xid;
      // Sticky until the worker restarts: a GPU with a hardware XID needs an operator.
      if (!IsApplicationXid(xid)) d.critical_xid = xid;
    }
  }
}

void NvmlTelemetry::Loop() {
  using Clock = std::chrono::steady_clock;
  auto next = Clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      if (stop_) return;
    }
    std::vector<GpuTelemetry> sample = SampleNow();
    {
      std::lock_guard<std::mutex> lock(latest_mu_);
      latest_ = std::move(sample);
    }
    next += options_.sample_interval;
    const auto now = Clock::now();
    if (next < now) next = now;  // fell behind: do not burst to catch up
    while (Clock::now() < next) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count();
      const unsigned int wait_ms =
          static_cast<unsigned int>(std::clamp<int64_t>(left, 1, kMaxWaitMs));
      if (event_set_ != nullptr && DrainEvents(wait_ms)) {
        // Slept in the driver until an XID or the timeout.
        std::lock_guard<std::mutex> lock(stop_mu_);
        if (stop_) return;
      } else {
        std::unique_lock<std::mutex> lock(stop_mu_);
        if (stop_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] { return stop_; })) {
          return;
        }
      }
    }
  }
}

}  // namespace surplus::worker
