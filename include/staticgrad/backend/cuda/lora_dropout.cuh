#pragma once
// LoRA dropout on CUDA: the CPU executor's mask (ops/lora_dropout.hpp,
// dropout_fn::uniform of seed, adapter stream, token, feature), recomputed
// wherever it is needed instead of stored. block_executor runs
//   forward:  Xm = mask(X) (kept elements unchanged, dropped 0; bf16, exact);
//             Z = c Xm A^T with c = 1 / (1 - p) as the product's alpha
//   backward: Xm again for dA (+)= c dZ^T Xm;
//             G = c dZ A, then dX (+)= mask(G)
// so every value equals the CPU's X * scale(t, i) up to where bf16 rounds.
// The seed is read from device memory (model_step writes it inside the step,
// so a replayed CUDA graph uses each step's seed); p, the adapter stream and
// the shapes are kernel arguments fixed per launch.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/ops/lora_dropout.hpp"

namespace staticgrad::cuda {

using bf16 = __nv_bfloat16;

namespace dropout_detail {

// dst[t, i] (+)= keep(t, i) ? src[t, i] : 0 over [T, in] row-major (accumulate:
// added in f32, rounded once; otherwise a copy, exact in bf16).
__global__ inline void masked_kernel(const bf16* __restrict__ src, bf16* __restrict__ dst, std::int64_t T, int in,
                                     float p, const std::uint64_t* __restrict__ seed, std::uint64_t stream,
                                     bool accumulate) {
  const std::uint64_t s = *seed;
  const std::int64_t n = T * in;
  for (std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = k / in;
    const int i = static_cast<int>(k - t * in);
    const float v = dropout_fn::uniform(s, stream, t, i) >= p ? __bfloat162float(src[k]) : 0.0f;
    dst[k] = __float2bfloat16(accumulate ? __bfloat162float(dst[k]) + v : v);
  }
}

inline unsigned grid_of(std::int64_t n) {
  const std::int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

}  // namespace dropout_detail

// Xm = mask(X): [T, in] bf16.
inline void lora_dropout_mask(const bf16* X, bf16* Xm, std::int64_t T, int in, float p, const std::uint64_t* seed,
                              std::uint64_t stream, cudaStream_t st) {
  dropout_detail::masked_kernel<<<dropout_detail::grid_of(T * in), 256, 0, st>>>(X, Xm, T, in, p, seed, stream, false);
  SG_CUDA_CHECK(cudaGetLastError());
}

// dX (+)= mask(G): [T, in] bf16.
inline void lora_dropout_grad(const bf16* G, bf16* dX, std::int64_t T, int in, float p, const std::uint64_t* seed,
                              std::uint64_t stream, bool accumulate, cudaStream_t st) {
  dropout_detail::masked_kernel<<<dropout_detail::grid_of(T * in), 256, 0, st>>>(G, dX, T, in, p, seed, stream,
                                                                                 accumulate);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace staticgrad::cuda
