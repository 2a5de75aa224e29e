#pragma once
// random_fill(p, n, mean, std, seed): n deterministic pseudo-random values
// (a hash of the index and the seed, uniform, so mean and standard deviation
// are as asked) written on the device, for the weights and tokens of GPU
// tests and benchmarks that need plausible data without a checkpoint. The
// same (n, seed) gives the same values on every device and run.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "staticgrad/backend/cuda/check.cuh"

namespace staticgrad::cuda {

// Grid-stride over p[0, n): a 32-bit integer hash of (i, seed) mapped to a
// uniform value in [-0.5, 0.5) (standard deviation 1/sqrt(12)), scaled to `std`.
template <class T>
__global__ void random_fill_kernel(T* p, std::int64_t n, float mean, float std, std::uint32_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    const float u = static_cast<float>(h) * (1.0f / 4294967296.0f) - 0.5f;
    p[i] = static_cast<T>(mean + std * 3.4641016f * u);
  }
}

// Launches random_fill_kernel on the default stream (checked).
template <class T>
void random_fill(T* p, std::size_t n, float mean, float std, std::uint32_t seed) {
  random_fill_kernel<<<1024, 256>>>(p, static_cast<std::int64_t>(n), mean, std, seed);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace staticgrad::cuda
