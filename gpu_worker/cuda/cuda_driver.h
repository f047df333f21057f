#pragma once
// CUDA driver API entry points resolved through the runtime (cudaGetDriverEntryPoint-
// ByVersion) instead of linking libcuda: the worker binary then loads on nodes without an
// NVIDIA driver, where it reports "no GPU" instead of failing to start.

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace surplus::worker {

struct DriverApi {
  PFN_cuCtxGetCurrent_v4000 CtxGetCurrent = nullptr;
  PFN_cuCtxSetCurrent_v4000 CtxSetCurrent = nullptr;
  PFN_cuDeviceGet_v2000 DeviceGet = nullptr;
  PFN_cuStreamDestroy_v4000 StreamDestroy = nullptr;
  PFN_cuGetErrorString_v6000 GetErrorString = nullptr;
  // Green contexts (CUDA 12.4+, stream creation 12.5+); null on older drivers.
  PFN_cuDeviceGetDevResource_v12040 DeviceGetDevResource = nullptr;
  PFN_cuDevSmResourceSplitByCount_v12040 DevSmResourceSplitByCount = nullptr;
  PFN_cuDevResourceGenerateDesc_v12040 DevResourceGenerateDesc = nullptr;
  PFN_cuGreenCtxCreate_v12040 GreenCtxCreate = nullptr;
  PFN_cuGreenCtxDestroy_v12040 GreenCtxDestroy = nullptr;
  PFN_cuCtxFromGreenCtx_v12040 CtxFromGreenCtx = nullptr;
  PFN_cuGreenCtxGetDevResource_v12040 GreenCtxGetDevResource = nullptr;
  PFN_cuGreenCtxStreamCreate_v12050 GreenCtxStreamCreate = nullptr;

  /// Resolves every entry point; the CUDA runtime must be able to load the driver.
  static absl::StatusOr<DriverApi> Load();
  bool HasGreenContexts() const {
    return DeviceGetDevResource && DevSmResourceSplitByCount && DevResourceGenerateDesc &&
           GreenCtxCreate && GreenCtxDestroy && CtxFromGreenCtx && GreenCtxGetDevResource &&
           GreenCtxStreamCreate;
  }
  std::string ErrorText(CUresult rc) const;
};

/// "cudaErrorX (text)" as a status with `what` in front; OK for cudaSuccess.
absl::Status CudaStatus(cudaError_t rc, const char* what);

}  // namespace surplus::worker
