#include "gpu_worker/cuda/cuda_driver.h"

#include "absl/strings/str_cat.h"

namespace surplus::worker {
namespace {

// Oldest CUDA version whose ABI every entry point below has (cuGreenCtxStreamCreate).
constexpr unsigned int kEntryPointVersion = 12050;

template <typename Fn>
bool Resolve(const char* name, Fn* fn, bool required, std::string* missing) {
  void* ptr = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  cudaError_t rc = cudaGetDriverEntryPointByVersion(name, &ptr, kEntryPointVersion,
                                                    cudaEnableDefault, &found);
  if (rc != cudaSuccess || found != cudaDriverEntryPointSuccess || ptr == nullptr) {
    *fn = nullptr;
    if (required) absl::StrAppend(missing, missing->empty() ? "" : ", ", name);
    return false;
  }
  *fn = reinterpret_cast<Fn>(ptr);
  return true;
}

}  // namespace

absl::StatusOr<DriverApi> DriverApi::Load() {
  DriverApi d;
  std::string missing;
  Resolve("cuCtxGetCurrent", &d.CtxGetCurrent, true, &missing);
  Resolve("cuCtxSetCurrent", &d.CtxSetCurrent, true, &missing);
  Resolve("cuDeviceGet", &d.DeviceGet, true, &missing);
  Resolve("cuStreamDestroy", &d.StreamDestroy, true, &missing);
  Resolve("cuGetErrorString", &d.GetErrorString, true, &missing);
  Resolve("cuDeviceGetDevResource", &d.DeviceGetDevResource, false, &missing);
  Resolve("cuDevSmResourceSplitByCount", &d.DevSmResourceSplitByCount, false, &missing);
  Resolve("cuDevResourceGenerateDesc", &d.DevResourceGenerateDesc, false, &missing);
  Resolve("cuGreenCtxCreate", &d.GreenCtxCreate, false, &missing);
  Resolve("cuGreenCtxDestroy", &d.GreenCtxDestroy, false, &missing);
  Resolve("cuCtxFromGreenCtx", &d.CtxFromGreenCtx, false, &missing);
  Resolve("cuGreenCtxGetDevResource", &d.GreenCtxGetDevResource, false, &missing);
  Resolve("cuGreenCtxStreamCreate", &d.GreenCtxStreamCreate, false, &missing);
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA driver lacks required entry points: ", missing));
  }
  return d;
}

std::string DriverApi::ErrorText(CUresult rc) const {
  const char* text = nullptr;
  if (GetErrorString != nullptr) GetErrorString(rc, &text);
  return absl::StrCat("CUresult ", static_cast<int>(rc), text ? absl::StrCat(" (", text, ")") : "");
}

absl::Status CudaStatus(cudaError_t rc, const char* what) {
  if (rc == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(rc), " (", cudaGetErrorString(rc), ")"));
}

}  // namespace surplus::worker
