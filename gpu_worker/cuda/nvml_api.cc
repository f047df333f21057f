#include "gpu_worker/cuda/nvml_api.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace surplus::worker {
namespace {

// Resolves `name` into `*fn`; false when the symbol is absent.
template <typename Fn>
bool Resolve(void* handle, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(handle, name));
  return *fn != nullptr;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NvmlLibrary>> NvmlLibrary::Load(
    const std::string& library_path) {
  void* handle = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "no NVIDIA GPU: ", library_path, " not loadable (", err ? err : "unknown error", ")"));
  }
  std::unique_ptr<NvmlLibrary> lib(new NvmlLibrary());
  lib->handle_ = handle;
  NvmlApi& a = lib->api_;
  bool required = Resolve(handle, "nvmlInit_v2", &a.Init) &&
                  Resolve(handle, "nvmlShutdown", &a.Shutdown) &&
                  Resolve(handle, "nvmlErrorString", &a.ErrorString) &&
                  Resolve(handle, "nvmlDeviceGetCount_v2", &a.DeviceGetCount) &&
                  Resolve(handle, "nvmlDeviceGetHandleByIndex_v2", &a.DeviceGetHandleByIndex) &&
                  Resolve(handle, "nvmlDeviceGetName", &a.DeviceGetName) &&
                  Resolve(handle, "nvmlDeviceGetUUID", &a.DeviceGetUUID) &&
                  Resolve(handle, "nvmlDeviceGetMemoryInfo", &a.DeviceGetMemoryInfo);
  if (!required) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable NVML: ", library_path, " lacks a required function (driver too old?)"));
  }
  Resolve(handle, "nvmlDeviceGetUtilizationRates", &a.DeviceGetUtilizationRates);
  Resolve(handle, "nvmlDeviceGetTemperature", &a.DeviceGetTemperature);
  Resolve(handle, "nvmlDeviceGetPowerUsage", &a.DeviceGetPowerUsage);
  Resolve(handle, "nvmlDeviceGetClockInfo", &a.DeviceGetClockInfo);
  Resolve(handle, "nvmlDeviceGetTotalEccErrors", &a.DeviceGetTotalEccErrors);
  Resolve(handle, "nvmlDeviceGetMigMode", &a.DeviceGetMigMode);
  Resolve(handle, "nvmlDeviceGetMaxMigDeviceCount", &a.DeviceGetMaxMigDeviceCount);
  Resolve(handle, "nvmlDeviceGetMigDeviceHandleByIndex", &a.DeviceGetMigDeviceHandleByIndex);
  Resolve(handle, "nvmlDeviceGetGpuInstanceId", &a.DeviceGetGpuInstanceId);
  Resolve(handle, "nvmlDeviceGetGpuInstanceById", &a.DeviceGetGpuInstanceById);
  Resolve(handle, "nvmlGpuInstanceGetInfo", &a.GpuInstanceGetInfo);
  Resolve(handle, "nvmlDeviceGetComputeRunningProcesses_v3",
          &a.DeviceGetComputeRunningProcesses);
  Resolve(handle, "nvmlDeviceGetMPSComputeRunningProcesses_v3",
          &a.DeviceGetMPSComputeRunningProcesses);
  Resolve(handle, "nvmlEventSetCreate", &a.EventSetCreate);
  Resolve(handle, "nvmlEventSetFree", &a.EventSetFree);
  Resolve(handle, "nvmlDeviceRegisterEvents", &a.DeviceRegisterEvents);
  Resolve(handle, "nvmlDeviceGetSupportedEventTypes", &a.DeviceGetSupportedEventTypes);
  Resolve(handle, "nvmlEventSetWait_v2", &a.EventSetWait);

  nvmlReturn_t rc = a.Init();
  if (rc != kNvmlSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("no NVIDIA GPU: nvmlInit failed: ", lib->ErrorText(rc)));
  }
  lib->initialized_ = true;
  return lib;
}

NvmlLibrary::~NvmlLibrary() {
  if (initialized_) api_.Shutdown();
  // The library stays mapped: CUDA libraries and other NVML users in the process may hold
  // it too, and dlclose of the driver's libraries is known to be unsafe at exit.
}

std::string NvmlLibrary::ErrorText(nvmlReturn_t code) const {
  const char* text = api_.ErrorString != nullptr ? api_.ErrorString(code) : nullptr;
  return absl::StrCat("NVML error ", code, text ? absl::StrCat(" (", text, ")") : "");
}

}  // namespace surplus::worker
