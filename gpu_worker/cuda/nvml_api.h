#pragma once
// NVML loaded at run time with dlopen: the worker binary must start on nodes without an
// NVIDIA driver (it then reports a clear error and the sim backend can be used instead),
// so NVML is never a link-time dependency. Only the few functions the worker uses are
// declared here, with the layouts of the public nvml.h they mirror.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace surplus::worker {

// --- Minimal NVML declarations (ABI of nvml.h, r525 and later) -------------------------
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
using nvmlGpuInstance_t = struct nvmlGpuInstance_st*;
using nvmlEventSet_t = struct nvmlEventSet_st*;

inline constexpr nvmlReturn_t kNvmlSuccess = 0;
inline constexpr nvmlReturn_t kNvmlErrorNotSupported = 3;
inline constexpr nvmlReturn_t kNvmlErrorNotFound = 6;
inline constexpr nvmlReturn_t kNvmlErrorInsufficientSize = 7;
inline constexpr nvmlReturn_t kNvmlErrorTimeout = 10;
inline constexpr nvmlReturn_t kNvmlErrorFunctionNotFound = 13;
inline constexpr nvmlReturn_t kNvmlErrorGpuIsLost = 15;
inline constexpr nvmlReturn_t kNvmlErrorResetRequired = 16;

inline constexpr unsigned long long kNvmlEventTypeXidCriticalError = 0x8ULL;
inline constexpr unsigned long long kNvmlValueNotAvailable = ~0ULL;
inline constexpr unsigned int kNvmlDeviceNameBufferSize = 96;
inline constexpr unsigned int kNvmlDeviceUuidBufferSize = 96;
inline constexpr unsigned int kNvmlTemperatureGpu = 0;
inline constexpr unsigned int kNvmlMemoryErrorTypeUncorrected = 1;
inline constexpr unsigned int kNvmlVolatileEcc = 0;
inline constexpr unsigned int kNvmlDeviceMigEnable = 1;
inline constexpr unsigned int kNvmlClockSm = 1;

struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
/// nvmlProcessInfo_t as filled by the *_v3 process queries.
struct NvmlProcessInfo {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
struct NvmlEventData {
  nvmlDevice_t device;
  unsigned long long eventType;
  unsigned long long eventData;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
struct NvmlGpuInstancePlacement {
  unsigned int start;
  unsigned int size;
};
struct NvmlGpuInstanceInfo {
  nvmlDevice_t device;
  unsigned int id;
  unsigned int profileId;
  NvmlGpuInstancePlacement placement;
};

/// Function table of the loaded library. Optional entries may be null when the driver is
/// older than the function; callers treat null as "not supported".
struct NvmlApi {
  // Required: without these the library is useless.
  nvmlReturn_t (*Init)() = nullptr;                       // nvmlInit_v2
  nvmlReturn_t (*Shutdown)() = nullptr;                   // nvmlShutdown
  const char* (*ErrorString)(nvmlReturn_t) = nullptr;     // nvmlErrorString
  nvmlReturn_t (*DeviceGetCount)(unsigned int*) = nullptr;  // nvmlDeviceGetCount_v2
  nvmlReturn_t (*DeviceGetHandleByIndex)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*DeviceGetName)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*DeviceGetUUID)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*DeviceGetMemoryInfo)(nvmlDevice_t, NvmlMemory*) = nullptr;

  // Optional.
  nvmlReturn_t (*DeviceGetUtilizationRates)(nvmlDevice_t, NvmlUtilization*) = nullptr;
  nvmlReturn_t (*DeviceGetTemperature)(nvmlDevice_t, unsigned int, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetPowerUsage)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetClockInfo)(nvmlDevice_t, unsigned int, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetTotalEccErrors)(nvmlDevice_t, unsigned int, unsigned int,
                                          unsigned long long*) = nullptr;
  nvmlReturn_t (*DeviceGetMigMode)(nvmlDevice_t, unsigned int*, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetMaxMigDeviceCount)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetMigDeviceHandleByIndex)(nvmlDevice_t, unsigned int,
                                                  nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*DeviceGetGpuInstanceId)(nvmlDevice_t, unsigned int*) = nullptr;
  nvmlReturn_t (*DeviceGetGpuInstanceById)(nvmlDevice_t, unsigned int,
                                           nvmlGpuInstance_t*) = nullptr;
  nvmlReturn_t (*GpuInstanceGetInfo)(nvmlGpuInstance_t, NvmlGpuInstanceInfo*) = nullptr;
  nvmlReturn_t (*DeviceGetComputeRunningProcesses)(nvmlDevice_t, unsigned int*,
                                                   NvmlProcessInfo*) = nullptr;  // _v3
  nvmlReturn_t (*DeviceGetMPSComputeRunningProcesses)(nvmlDevice_t, unsigned int*,
                                                      NvmlProcessInfo*) = nullptr;  // _v3
  nvmlReturn_t (*EventSetCreate)(nvmlEventSet_t*) = nullptr;
  nvmlReturn_t (*EventSetFree)(nvmlEventSet_t) = nullptr;
  nvmlReturn_t (*DeviceRegisterEvents)(nvmlDevice_t, unsigned long long,
                                       nvmlEventSet_t) = nullptr;
  nvmlReturn_t (*DeviceGetSupportedEventTypes)(nvmlDevice_t, unsigned long long*) = nullptr;
  nvmlReturn_t (*EventSetWait)(nvmlEventSet_t, NvmlEventData*, unsigned int) = nullptr;  // _v2
};

/// An initialized NVML: dlopen + nvmlInit on creation, nvmlShutdown + dlclose on
/// destruction. Thread-safe as NVML itself is.
class NvmlLibrary {
 public:
  /// Loads `library_path` (default "libnvidia-ml.so.1") and initializes NVML.
  /// FAILED_PRECONDITION when the library cannot be loaded or NVML cannot initialize
  /// (no driver): the message starts with "no NVIDIA GPU:".
  static absl::StatusOr<std::unique_ptr<NvmlLibrary>> Load(
      const std::string& library_path = "libnvidia-ml.so.1");
  ~NvmlLibrary();
  NvmlLibrary(const NvmlLibrary&) = delete;
  NvmlLibrary& operator=(const NvmlLibrary&) = delete;

  const NvmlApi& api() const { return api_; }
  /// "NVML_ERROR_...: text" for logs and statuses.
  std::string ErrorText(nvmlReturn_t code) const;

 private:
  NvmlLibrary() = default;
  void* handle_ = nullptr;
  bool initialized_ = false;
  NvmlApi api_;
};

}  // namespace surplus::worker
