#pragma once
// Input fill for the built-in workloads (fill_kernels.cu).

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace surplus::worker {

/// Fills `count` BF16 values with uniform noise in [-1, 1).
cudaError_t FillRandomBf16(void* data, size_t count, uint32_t seed, cudaStream_t stream);
/// Fills `count` floats with uniform noise in [-1, 1).
cudaError_t FillRandomF32(float* data, size_t count, uint32_t seed, cudaStream_t stream);

}  // namespace surplus::worker
