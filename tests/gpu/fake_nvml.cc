// A fake libnvidia-ml.so for tests on machines without an NVIDIA GPU.
//
// It exports the NVML functions the worker resolves with dlsym, with the signatures and
// structure layouts of gpu_worker/cuda/nvml_api.h (those of nvml.h), so the worker's real
// loading, sampling, process, MIG, ECC and XID code runs against it unchanged. What the
// "GPUs" report comes from a JSON file named by SURPLUS_FAKE_NVML_STATE; the file is read
// again whenever it changes (write it to a temporary name and rename it into place), so a
// test can make an owner process appear, raise an XID or take a GPU off the bus while the
// worker runs. Without that variable nvmlInit fails as it does without a driver.
//
// State file:
//   {"init_error": 0,                          // nvmlInit_v2's return code
//    "gpus": [{
//      "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...",
//      "memory_total_mib": 81559, "memory_used_mib": 0,
//      "utilization": 0, "temperature": 35, "power_mw": 70000, "ecc_uncorrected": 0,
//      "lost": false,                          // every query answers GPU_IS_LOST
//      "reset_required": false,                // every query answers RESET_REQUIRED
//      "unsupported": ["power", ...],          // utilization, temperature, power, ecc,
//                                              // mig, processes, events: NOT_SUPPORTED
//      "mig_mode": false,
//      "mig": [{"uuid": "MIG-...", "profile": "3g.40gb", "gi_id": 1, "start": 0, "size": 4,
//               "processes": [...],             // listed by the MIG device's handle only
//               "placement_hidden": false}],    // GPU instance lookup: NO_PERMISSION
//      "processes": [{"pid": 123, "used_mib": 1024}], "mps_processes": [...],
//      "xids": [79]}]}                         // every XID ever raised, oldest first; each
//                                              // is delivered once by nvmlEventSetWait
// The number of GPUs is fixed when NVML initializes, as on a real node.

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gpu_worker/cuda/nvml_api.h"

namespace {

using surplus::worker::NvmlEventData;
using surplus::worker::NvmlGpuInstanceInfo;
using surplus::worker::NvmlMemory;
using surplus::worker::NvmlProcessInfo;
using surplus::worker::NvmlUtilization;
using surplus::worker::nvmlDevice_t;
using surplus::worker::nvmlEventSet_t;
using surplus::worker::nvmlGpuInstance_t;
using surplus::worker::nvmlReturn_t;

// Return codes of nvml.h not named by nvml_api.h.
constexpr nvmlReturn_t kUninitialized = 1;
constexpr nvmlReturn_t kInvalidArgument = 2;
constexpr nvmlReturn_t kNoPermission = 4;
constexpr nvmlReturn_t kDriverNotLoaded = 9;
constexpr int kMaxGpus = 16;
constexpr int kMaxMig = 7;
constexpr unsigned long long kMiB = 1024ULL * 1024ULL;

struct Process {
  unsigned int pid = 0;
  unsigned long long used_mib = 0;
};
struct Mig {
  std::string uuid, profile;
  unsigned int gi_id = 0, start = 0, size = 0;
  std::vector<Process> processes;
  bool placement_hidden = false;  // its GPU instance lookup needs privileges we lack
};
struct Gpu {
  std::string name, uuid;
  unsigned long long memory_total_mib = 0, memory_used_mib = 0, ecc_uncorrected = 0;
  unsigned int utilization = 0, temperature = 0, power_mw = 0;
  bool lost = false, reset_required = false, mig_mode = false;
  std::vector<std::string> unsupported;
  std::vector<Mig> mig;
  std::vector<Process> processes, mps_processes;
  std::vector<int> xids;
  bool Unsupported(const char* what) const {
    return std::find(unsupported.begin(), unsupported.end(), what) != unsupported.end();
  }
};

// Handles are addresses in these tables; the fake knows which is which by range.
struct DeviceSlot {
  int gpu = -1, mig = -1;  // mig -1: the whole GPU
};
DeviceSlot g_devices[kMaxGpus];
DeviceSlot g_mig_devices[kMaxGpus][kMaxMig];
DeviceSlot g_gpu_instances[kMaxGpus][kMaxMig];
int g_event_set_token;

std::mutex g_mu;
bool g_initialized = false;
int g_count = 0;  // fixed at init
std::vector<Gpu> g_gpus;
struct timespec g_mtime {};
off_t g_size = -1;
ino_t g_ino = 0;
std::vector<size_t> g_xids_delivered;  // per GPU
std::vector<bool> g_events_registered;

std::vector<Process> ParseProcesses(const nlohmann::json& j) {
  std::vector<Process> out;
  for (const auto& p : j) out.push_back({p.value("pid", 0u), p.value("used_mib", 0ULL)});
  return out;
}

// Re-reads the state file when it changed since the last read; keeps the old state when
// the file is missing or not valid JSON. Caller holds g_mu.
int ReloadLocked() {
  const char* path = std::getenv("SURPLUS_FAKE_NVML_STATE");
  if (path == nullptr) return kDriverNotLoaded;
  struct stat st {};
  if (::stat(path, &st) != 0) return kDriverNotLoaded;
  if (st.st_ino == g_ino && st.st_size == g_size && st.st_mtim.tv_sec == g_mtime.tv_sec &&
      st.st_mtim.tv_nsec == g_mtime.tv_nsec) {
    return 0;
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return g_gpus.empty() ? kDriverNotLoaded : 0;
  g_ino = st.st_ino;
  g_size = st.st_size;
  g_mtime = st.st_mtim;
  std::vector<Gpu> gpus;
  for (const auto& g : j.value("gpus", nlohmann::json::array())) {
    Gpu gpu;
    gpu.name = g.value("name", "NVIDIA H100 80GB HBM3");
    gpu.uuid = g.value("uuid", "");
    gpu.memory_total_mib = g.value("memory_total_mib", 81559ULL);
    gpu.memory_used_mib = g.value("memory_used_mib", 0ULL);
    gpu.utilization = g.value("utilization", 0u);
    gpu.temperature = g.value("temperature", 35u);
    gpu.power_mw = g.value("power_mw", 70000u);
    gpu.ecc_uncorrected = g.value("ecc_uncorrected", 0ULL);
    gpu.lost = g.value("lost", false);
    gpu.reset_required = g.value("reset_required", false);
    gpu.mig_mode = g.value("mig_mode", false);
    gpu.unsupported = g.value("unsupported", std::vector<std::string>{});
    for (const auto& m : g.value("mig", nlohmann::json::array())) {
      gpu.mig.push_back({m.value("uuid", ""), m.value("profile", ""), m.value("gi_id", 0u),
                         m.value("start", 0u), m.value("size", 0u),
                         ParseProcesses(m.value("processes", nlohmann::json::array())),
                         m.value("placement_hidden", false)});
    }
    if (gpu.mig.size() > kMaxMig) gpu.mig.resize(kMaxMig);
    gpu.processes = ParseProcesses(g.value("processes", nlohmann::json::array()));
    gpu.mps_processes = ParseProcesses(g.value("mps_processes", nlohmann::json::array()));
    gpu.xids = g.value("xids", std::vector<int>{});
    gpus.push_back(std::move(gpu));
  }
  if (gpus.size() > kMaxGpus) gpus.resize(kMaxGpus);
  g_gpus = std::move(gpus);
  return j.value("init_error", 0);
}

// The GPU behind a device handle (whole GPU or MIG device) after a reload; null when the
// handle is not one of ours or the GPU is gone from the state file.
const Gpu* Lookup(nvmlDevice_t device, const DeviceSlot** slot_out = nullptr) {
  ReloadLocked();
  const auto* slot = reinterpret_cast<const DeviceSlot*>(device);
  const auto* first = &g_devices[0];
  const auto* mig_first = &g_mig_devices[0][0];
  const bool whole = slot >= first && slot < first + kMaxGpus;
  const bool mig = slot >= mig_first && slot < mig_first + kMaxGpus * kMaxMig;
  if (!whole && !mig) return nullptr;
  if (slot->gpu < 0 || slot->gpu >= static_cast<int>(g_gpus.size())) return nullptr;
  if (slot_out != nullptr) *slot_out = slot;
  return &g_gpus[static_cast<size_t>(slot->gpu)];
}

// The MIG instance that the slot of a MIG device or GPU instance (mig >= 0) stands for;
// null when the state file no longer has it.
const Mig* MigOf(const Gpu& gpu, const DeviceSlot& slot) {
  const size_t m = static_cast<size_t>(slot.mig);
  return m < gpu.mig.size() ? &gpu.mig[m] : nullptr;
}

// Common prologue of a device query: the GPU, or the code to return.
#define FAKE_DEVICE(device, feature)                                         \
  std::lock_guard<std::mutex> lock(g_mu);                                    \
  if (!g_initialized) return kUninitialized;                                 \
  const DeviceSlot* slot = nullptr;                                          \
  const Gpu* gpu = Lookup(device, &slot);                                    \
  if (gpu == nullptr) return kInvalidArgument;                               \
  if (gpu->lost) return surplus::worker::kNvmlErrorGpuIsLost;                \
  if (gpu->reset_required) return surplus::worker::kNvmlErrorResetRequired;  \
  if (feature != nullptr && gpu->Unsupported(feature)) {                     \
    return surplus::worker::kNvmlErrorNotSupported;                          \
  }                                                                          \
  (void)slot

nvmlReturn_t CopyString(const std::string& s, char* buf, unsigned int len) {
  if (buf == nullptr) return kInvalidArgument;
  if (s.size() + 1 > len) return surplus::worker::kNvmlErrorInsufficientSize;
  std::memcpy(buf, s.c_str(), s.size() + 1);
  return 0;
}

nvmlReturn_t ListProcesses(const std::vector<Process>& procs, unsigned int* count,
                           NvmlProcessInfo* infos) {
  if (count == nullptr) return kInvalidArgument;
  const auto n = static_cast<unsigned int>(procs.size());
  if (*count < n || (n > 0 && infos == nullptr)) {
    *count = n;
    return surplus::worker::kNvmlErrorInsufficientSize;
  }
  for (unsigned int i = 0; i < n; ++i) {
    infos[i].pid = procs[i].pid;
    infos[i].usedGpuMemory = procs[i].used_mib * kMiB;
    infos[i].gpuInstanceId = 0xFFFFFFFFu;
    infos[i].computeInstanceId = 0xFFFFFFFFu;
  }
  *count = n;
  return 0;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) nvmlReturn_t nvmlInit_v2() {
  std::lock_guard<std::mutex> lock(g_mu);
  g_size = -1;  // read the file afresh
  const int rc = ReloadLocked();
  if (rc != 0) return rc;
  g_initialized = true;
  g_count = static_cast<int>(g_gpus.size());
  g_xids_delivered.assign(kMaxGpus, 0);
  g_events_registered.assign(kMaxGpus, false);
  for (int i = 0; i < kMaxGpus; ++i) {
    g_devices[i] = {i, -1};
    for (int m = 0; m < kMaxMig; ++m) {
      g_mig_devices[i][m] = {i, m};
      g_gpu_instances[i][m] = {i, m};
    }
  }
  // XIDs raised before NVML started are history, not events.
  for (size_t i = 0; i < g_gpus.size(); ++i) g_xids_delivered[i] = g_gpus[i].xids.size();
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlShutdown() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_initialized) return kUninitialized;
  g_initialized = false;
  return 0;
}

__attribute__((visibility("default"))) const char* nvmlErrorString(nvmlReturn_t rc) {
  switch (rc) {
    case 0: return "Success";
    case kUninitialized: return "Uninitialized";
    case kInvalidArgument: return "Invalid Argument";
    case kNoPermission: return "Insufficient Permissions";
    case surplus::worker::kNvmlErrorNotSupported: return "Not Supported";
    case surplus::worker::kNvmlErrorNotFound: return "Not Found";
    case surplus::worker::kNvmlErrorInsufficientSize: return "Insufficient Size";
    case kDriverNotLoaded: return "Driver Not Loaded";
    case surplus::worker::kNvmlErrorTimeout: return "Timeout";
    case surplus::worker::kNvmlErrorGpuIsLost: return "GPU is lost";
    case surplus::worker::kNvmlErrorResetRequired: return "Reset Required";
    default: return "Unknown Error";
  }
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_initialized) return kUninitialized;
  if (count == nullptr) return kInvalidArgument;
  *count = static_cast<unsigned int>(g_count);
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(
    unsigned int index, nvmlDevice_t* device) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_initialized) return kUninitialized;
  if (device == nullptr || index >= static_cast<unsigned int>(g_count)) return kInvalidArgument;
  *device = reinterpret_cast<nvmlDevice_t>(&g_devices[index]);
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device,
                                                                      char* name,
                                                                      unsigned int len) {
  FAKE_DEVICE(device, static_cast<const char*>(nullptr));
  if (slot->mig >= 0) {
    const Mig* mig = MigOf(*gpu, *slot);
    if (mig == nullptr) return surplus::worker::kNvmlErrorNotFound;
    return CopyString(gpu->name + " MIG " + mig->profile, name, len);
  }
  return CopyString(gpu->name, name, len);
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device,
                                                                      char* uuid,
                                                                      unsigned int len) {
  FAKE_DEVICE(device, static_cast<const char*>(nullptr));
  if (slot->mig >= 0) {
    const Mig* mig = MigOf(*gpu, *slot);
    if (mig == nullptr) return surplus::worker::kNvmlErrorNotFound;
    return CopyString(mig->uuid, uuid, len);
  }
  return CopyString(gpu->uuid, uuid, len);
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device,
                                                                            NvmlMemory* mem) {
  FAKE_DEVICE(device, static_cast<const char*>(nullptr));
  if (mem == nullptr) return kInvalidArgument;
  mem->total = gpu->memory_total_mib * kMiB;
  mem->used = std::min(gpu->memory_used_mib, gpu->memory_total_mib) * kMiB;
  mem->free = mem->total - mem->used;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUtilizationRates(
    nvmlDevice_t device, NvmlUtilization* u) {
  FAKE_DEVICE(device, "utilization");
  if (u == nullptr) return kInvalidArgument;
  if (gpu->mig_mode) return surplus::worker::kNvmlErrorNotSupported;  // as on real MIG GPUs
  u->gpu = gpu->utilization;
  u->memory = 0;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetTemperature(
    nvmlDevice_t device, unsigned int sensor, unsigned int* temp) {
  FAKE_DEVICE(device, "temperature");
  if (temp == nullptr || sensor != surplus::worker::kNvmlTemperatureGpu) return kInvalidArgument;
  *temp = gpu->temperature;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device,
                                                                            unsigned int* mw) {
  FAKE_DEVICE(device, "power");
  if (mw == nullptr) return kInvalidArgument;
  *mw = gpu->power_mw;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device,
                                                                           unsigned int,
                                                                           unsigned int* mhz) {
  FAKE_DEVICE(device, "clocks");
  if (mhz == nullptr) return kInvalidArgument;
  *mhz = 1980;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetTotalEccErrors(
    nvmlDevice_t device, unsigned int error_type, unsigned int counter_type,
    unsigned long long* count) {
  FAKE_DEVICE(device, "ecc");
  if (count == nullptr) return kInvalidArgument;
  const bool uncorrected_volatile = error_type == surplus::worker::kNvmlMemoryErrorTypeUncorrected &&
                                    counter_type == surplus::worker::kNvmlVolatileEcc;
  *count = uncorrected_volatile ? gpu->ecc_uncorrected : 0;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device,
                                                                         unsigned int* current,
                                                                         unsigned int* pending) {
  FAKE_DEVICE(device, "mig");
  if (current == nullptr || pending == nullptr) return kInvalidArgument;
  *current = *pending = gpu->mig_mode ? surplus::worker::kNvmlDeviceMigEnable : 0;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(
    nvmlDevice_t device, unsigned int* count) {
  FAKE_DEVICE(device, "mig");
  if (count == nullptr) return kInvalidArgument;
  *count = gpu->mig_mode ? kMaxMig : 0;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(
    nvmlDevice_t device, unsigned int index, nvmlDevice_t* mig) {
  FAKE_DEVICE(device, "mig");
  if (mig == nullptr || slot->mig >= 0) return kInvalidArgument;
  if (!gpu->mig_mode || index >= gpu->mig.size()) return surplus::worker::kNvmlErrorNotFound;
  *mig = reinterpret_cast<nvmlDevice_t>(&g_mig_devices[slot->gpu][index]);
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device,
                                                                               unsigned int* id) {
  FAKE_DEVICE(device, "mig");
  if (id == nullptr || slot->mig < 0) return kInvalidArgument;
  const Mig* mig = MigOf(*gpu, *slot);
  if (mig == nullptr) return surplus::worker::kNvmlErrorNotFound;
  *id = mig->gi_id;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetGpuInstanceById(
    nvmlDevice_t device, unsigned int id, nvmlGpuInstance_t* gi) {
  FAKE_DEVICE(device, "mig");
  if (gi == nullptr || slot->mig >= 0) return kInvalidArgument;
  for (size_t m = 0; m < gpu->mig.size(); ++m) {
    if (gpu->mig[m].gi_id != id) continue;
    if (gpu->mig[m].placement_hidden) return kNoPermission;
    *gi = reinterpret_cast<nvmlGpuInstance_t>(&g_gpu_instances[slot->gpu][m]);
    return 0;
  }
  return surplus::worker::kNvmlErrorNotFound;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlGpuInstanceGetInfo(
    nvmlGpuInstance_t gi, NvmlGpuInstanceInfo* info) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_initialized) return kUninitialized;
  ReloadLocked();
  const auto* slot = reinterpret_cast<const DeviceSlot*>(gi);
  const auto* first = &g_gpu_instances[0][0];
  if (info == nullptr || slot < first || slot >= first + kMaxGpus * kMaxMig) return kInvalidArgument;
  if (slot->gpu >= static_cast<int>(g_gpus.size())) return surplus::worker::kNvmlErrorNotFound;
  const Gpu& gpu = g_gpus[static_cast<size_t>(slot->gpu)];
  if (gpu.lost) return surplus::worker::kNvmlErrorGpuIsLost;
  const Mig* m = MigOf(gpu, *slot);
  if (m == nullptr) return surplus::worker::kNvmlErrorNotFound;
  info->device = reinterpret_cast<nvmlDevice_t>(&g_devices[slot->gpu]);
  info->id = m->gi_id;
  info->profileId = 0;
  info->placement.start = m->start;
  info->placement.size = m->size;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(
    nvmlDevice_t device, unsigned int* count, NvmlProcessInfo* infos) {
  FAKE_DEVICE(device, "processes");
  if (slot->mig >= 0) {
    const Mig* mig = MigOf(*gpu, *slot);
    if (mig == nullptr) return surplus::worker::kNvmlErrorNotFound;
    return ListProcesses(mig->processes, count, infos);
  }
  return ListProcesses(gpu->processes, count, infos);
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(
    nvmlDevice_t device, unsigned int* count, NvmlProcessInfo* infos) {
  FAKE_DEVICE(device, "processes");
  if (slot->mig >= 0) return ListProcesses({}, count, infos);
  return ListProcesses(gpu->mps_processes, count, infos);
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t* set) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_initialized) return kUninitialized;
  if (set == nullptr) return kInvalidArgument;
  *set = reinterpret_cast<nvmlEventSet_t>(&g_event_set_token);
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (set != reinterpret_cast<nvmlEventSet_t>(&g_event_set_token)) return kInvalidArgument;
  g_events_registered.assign(kMaxGpus, false);
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetSupportedEventTypes(
    nvmlDevice_t device, unsigned long long* types) {
  FAKE_DEVICE(device, "events");
  if (types == nullptr) return kInvalidArgument;
  *types = surplus::worker::kNvmlEventTypeXidCriticalError;
  return 0;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceRegisterEvents(
    nvmlDevice_t device, unsigned long long types, nvmlEventSet_t set) {
  FAKE_DEVICE(device, "events");
  if (set != reinterpret_cast<nvmlEventSet_t>(&g_event_set_token) || slot->mig >= 0) {
    return kInvalidArgument;
  }
  if ((types & ~surplus::worker::kNvmlEventTypeXidCriticalError) != 0) {
    return surplus::worker::kNvmlErrorNotSupported;
  }
  g_events_registered[static_cast<size_t>(slot->gpu)] = true;
  return 0;
}

// Delivers the oldest XID not yet delivered on a registered GPU, waiting up to
// `timeout_ms` (checking the state file every 5 ms) for one to be raised.
__attribute__((visibility("default"))) nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set,
                                                                        NvmlEventData* data,
                                                                        unsigned int timeout_ms) {
  if (set != reinterpret_cast<nvmlEventSet_t>(&g_event_set_token) || data == nullptr) {
    return kInvalidArgument;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(g_mu);
      if (!g_initialized) return kUninitialized;
      ReloadLocked();
      // As the driver does: a lost GPU in the set fails the wait at once.
      for (size_t i = 0; i < g_gpus.size() && i < static_cast<size_t>(g_count); ++i) {
        if (g_events_registered[i] && g_gpus[i].lost) return surplus::worker::kNvmlErrorGpuIsLost;
      }
      for (size_t i = 0; i < g_gpus.size() && i < static_cast<size_t>(g_count); ++i) {
        if (!g_events_registered[i] || g_xids_delivered[i] >= g_gpus[i].xids.size()) continue;
        data->device = reinterpret_cast<nvmlDevice_t>(&g_devices[i]);
        data->eventType = surplus::worker::kNvmlEventTypeXidCriticalError;
        data->eventData = static_cast<unsigned long long>(g_gpus[i].xids[g_xids_delivered[i]++]);
        data->gpuInstanceId = 0xFFFFFFFFu;
        data->computeInstanceId = 0xFFFFFFFFu;
        return 0;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return surplus::worker::kNvmlErrorTimeout;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // extern "C"
