// Input fill for the built-in workloads: noise, not zeros, so that the tensor cores do
// real work and the power draw (hence clocks) matches a real job.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu_worker/cuda/fill_kernels.h"

namespace surplus::worker {
namespace {

__device__ __forceinline__ float Noise(uint64_t i, uint32_t seed) {
  // splitmix64 of the index: cheap, stateless and good enough for test data.
  uint64_t z = i + 0x9E3779B97F4A7C15ULL * (seed + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void FillBf16Kernel(__nv_bfloat16* data, size_t count, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    data[i] = __float2bfloat16(Noise(i, seed));
  }
}

__global__ void FillF32Kernel(float* data, size_t count, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    data[i] = Noise(i, seed);
  }
}

}  // namespace

cudaError_t FillRandomBf16(void* data, size_t count, uint32_t seed, cudaStream_t stream) {
  FillBf16Kernel<<<1024, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(data), count, seed);
  return cudaGetLastError();
}

cudaError_t FillRandomF32(float* data, size_t count, uint32_t seed, cudaStream_t stream) {
  FillF32Kernel<<<1024, 256, 0, stream>>>(data, count, seed);
  return cudaGetLastError();
}

}  // namespace surplus::worker
