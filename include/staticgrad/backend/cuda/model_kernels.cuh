#pragma once
// The small kernels of a whole-model training step on CUDA: the embedding
// gather and the cross-entropy rows of the chunked LM head (the plans'
// embedding and lm_head_ce entries, run by block_executor.cuh), and for
// model_step.cuh deterministic reductions and the fused AdamW update of the
// flat LoRA parameter array. (The final RMSNorm is a row group of the head
// plan: the op header's functor, not a kernel of its own.)
//
// Shapes (row-major, token-major):
//   ids [T] int32, embedding [V, H] bf16, x [T, H] bf16
//   cross-entropy: logits [C, V] f32 (a chunk of C tokens), targets [C] int32,
//                  loss [C] f32, dlogits [C, V] bf16
//   AdamW: p, g, m, v [n] f32, p16 [n] bf16
// Invariants:
//   * every launch is on the caller's stream, checked with cudaGetLastError,
//     allocates nothing and never synchronises: a sequence of them can be
//     captured in a CUDA graph;
//   * ids and targets are range-checked on the host before upload (the
//     kernels trust them: an id outside [0, V) would read out of bounds);
//   * all arithmetic is f32 (reductions of many terms in double), storage of
//     activations and gradients bf16, as the block executor;
//   * per-step scalars (the loss seed, AdamW's learning rate and bias
//     corrections) are read from device memory, so a captured step replays
//     with new values;
//   * reductions are deterministic (fixed grids, fixed trees, no atomics):
//     the same inputs give the same loss and norm bit for bit.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "staticgrad/backend/cuda/check.cuh"

namespace staticgrad::cuda {

namespace model_detail {

using bf16 = __nv_bfloat16;

// Sum of a float over a CTA of `Threads` threads (warp shuffles, then one
// value per warp in shared memory). Every thread gets the result.
template <int Threads, class F>
__device__ inline F block_sum(F v, F* smem /* [Threads / 32] */) {
  static_assert(Threads % 32 == 0 && Threads <= 1024, "block_sum: whole warps, at most 1024 threads");
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  F s = 0;
  for (int w = 0; w < Threads / 32; ++w) s += smem[w];  // same order in every thread: identical results
  return s;
}

// ---- embedding: x[t, :] = E[ids[t], :] -------------------------------------------
// 16-byte copies (8 bf16); H % 8 == 0 is checked by the caller.
__global__ inline void embedding_gather_kernel(const std::int32_t* __restrict__ ids, const uint4* __restrict__ E,
                                               uint4* __restrict__ x, std::int64_t T, std::int64_t H8) {
  const std::int64_t n = T * H8;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = i / H8, j = i % H8;
    x[i] = E[static_cast<std::int64_t>(ids[t]) * H8 + j];
  }
}

// ---- cross-entropy rows -------------------------------------------------------------
// One CTA per token row of the chunk. Pass 1: online max / sum of exp (each
// thread keeps (m, s) with s = sum exp(x - m)), combined over the CTA.
// Pass 2: dlogits = seed * (softmax - onehot(target)), bf16 (seed = dL/dloss_t,
// 1/counted for a mean; read from device memory: it changes per batch while a
// captured graph replays; bf16 keeps its relative precision at any scale).
// Ignored rows (target -100): loss 0 and a zero dlogits row (the product reads it).
constexpr int kCeThreads = 512;  // V = 151936: ~74 float4 per thread per pass

__device__ inline void lse_combine(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2, s = s2;
    return;
  }
  const float M = fmaxf(m, m2);
  s = s * expf(m - M) + s2 * expf(m2 - M);
  m = M;
}
__device__ inline void lse_add(float& m, float& s, float v) {
  if (v > m) {
    s = s * expf(m - v) + 1.0f;  // m = -inf at first: expf(-inf) = 0
    m = v;
  } else {
    s += expf(v - m);
  }
}

__global__ inline void cross_entropy_rows_kernel(const float* __restrict__ logits, const std::int32_t* __restrict__ targets,
                                                 std::int64_t V, float* __restrict__ loss, bf16* __restrict__ dlogits,
                                                 const float* __restrict__ seed_ptr) {
  __shared__ float sm_m[kCeThreads / 32], sm_s[kCeThreads / 32];
  const std::int64_t row = blockIdx.x;
  const float* x = logits + row * V;
  bf16* d = dlogits + row * V;
  const std::int32_t tgt = targets[row];
  const bool vec = (V % 4) == 0;  // rows 16-byte aligned: float4 loads, 8-byte bf16 stores
  if (tgt < 0) {  // ignored (the whole CTA takes this branch)
    const bf16 z = __float2bfloat16(0.0f);
    for (std::int64_t j = threadIdx.x; j < V; j += kCeThreads) d[j] = z;
    if (threadIdx.x == 0) loss[row] = 0.0f;
    return;
  }
  float m = -INFINITY, s = 0.0f;
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (std::int64_t j = threadIdx.x; j < V / 4; j += kCeThreads) {
      const float4 v = x4[j];
      lse_add(m, s, v.x), lse_add(m, s, v.y), lse_add(m, s, v.z), lse_add(m, s, v.w);
    }
  } else {
    for (std::int64_t j = threadIdx.x; j < V; j += kCeThreads) lse_add(m, s, x[j]);
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    lse_combine(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sm_m[warp] = m, sm_s[warp] = s;
  __syncthreads();
  m = -INFINITY, s = 0.0f;
  for (int w = 0; w < kCeThreads / 32; ++w) lse_combine(m, s, sm_m[w], sm_s[w]);  // same order everywhere
  const float lse = m + logf(s);
  const float seed = seed_ptr ? seed_ptr[0] : 1.0f;
  if (threadIdx.x == 0) loss[row] = lse - x[tgt];
  if (vec) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    uint2* d4 = reinterpret_cast<uint2*>(d);
    for (std::int64_t j = threadIdx.x; j < V / 4; j += kCeThreads) {
      const float4 v = x4[j];
      const std::int64_t j0 = 4 * j;
      const __nv_bfloat162 a = __floats2bfloat162_rn(seed * (expf(v.x - lse) - (j0 == tgt ? 1.0f : 0.0f)),
                                                     seed * (expf(v.y - lse) - (j0 + 1 == tgt ? 1.0f : 0.0f)));
      const __nv_bfloat162 b = __floats2bfloat162_rn(seed * (expf(v.z - lse) - (j0 + 2 == tgt ? 1.0f : 0.0f)),
                                                     seed * (expf(v.w - lse) - (j0 + 3 == tgt ? 1.0f : 0.0f)));
      uint2 u;
      u.x = *reinterpret_cast<const unsigned*>(&a);
      u.y = *reinterpret_cast<const unsigned*>(&b);
      d4[j] = u;
    }
  } else {
    for (std::int64_t j = threadIdx.x; j < V; j += kCeThreads)
      d[j] = __float2bfloat16(seed * (expf(x[j] - lse) - (j == tgt ? 1.0f : 0.0f)));
  }
}

// ---- deterministic reductions --------------------------------------------------------
constexpr int kReduceThreads = 1024;

// out[0] = sum of x[0, n) in double (one CTA: fixed order).
__global__ inline void sum_f32_kernel(const float* __restrict__ x, std::int64_t n, double* __restrict__ out) {
  __shared__ double smem[kReduceThreads / 32];
  double s = 0;
  for (std::int64_t i = threadIdx.x; i < n; i += kReduceThreads) s += x[i];
  s = block_sum<kReduceThreads>(s, smem);
  if (threadIdx.x == 0) out[0] = s;
}

// partial[b] = sum over this CTA's grid-stride share of g^2 (double).
constexpr int kNormBlocks = 264;  // 2 CTAs per H200 SM; fixed, so the sum order is fixed
constexpr int kNormBlockThreads = 256;
__global__ inline void sumsq_partial_kernel(const float* __restrict__ g, std::int64_t n, double* __restrict__ partial) {
  __shared__ double smem[kNormBlockThreads / 32];
  double s = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(kNormBlockThreads) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(kNormBlocks) * kNormBlockThreads) {
    const double v = g[i];
    s += v * v;
  }
  s = block_sum<kNormBlockThreads>(s, smem);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
// norm[0] = sqrt(sum partial); coef[0] = min(1, max_norm / (norm + 1e-6)) when
// max_norm > 0, else 1 (torch.nn.utils.clip_grad_norm_).
__global__ inline void grad_norm_finish_kernel(const double* __restrict__ partial, float max_norm,
                                               double* __restrict__ norm, float* __restrict__ coef) {
  if (threadIdx.x != 0) return;
  double s = 0;
  for (int b = 0; b < kNormBlocks; ++b) s += partial[b];
  const double nrm = sqrt(s);
  norm[0] = nrm;
  const double c = max_norm > 0 ? static_cast<double>(max_norm) / (nrm + 1e-6) : 1.0;
  coef[0] = c < 1.0 ? static_cast<float>(c) : 1.0f;
}

// ---- AdamW (torch.optim.AdamW; train/adamw.hpp gives the formulas) -----------------
struct adamw_step_args {
  float decay;      // 1 - lr * weight_decay
  float b1, b2;     // betas
  float step_size;  // lr / (1 - beta1^t)
  float bc2s;       // sqrt(1 - beta2^t)
  float eps;
};
// g is scaled by *coef (clipping; 1 without); p16 = bf16(p) after the update.
// Explicitly rounded operations (__fmul_rn, ...: never contracted into FMAs)
// in train::adamw's order, so the update is bit for bit the CPU's f32 update
// (IEEE division and square root: the build does not use --use_fast_math).
__global__ inline void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                                    float* __restrict__ v, bf16* __restrict__ p16, std::int64_t n,
                                    const float* __restrict__ coef, const adamw_step_args* __restrict__ args) {
  const float c = coef[0];
  const adamw_step_args a = *args;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float gi = __fmul_rn(g[i], c);
    float pi = __fmul_rn(p[i], a.decay);
    const float mi = __fadd_rn(__fmul_rn(a.b1, m[i]), __fmul_rn(1.f - a.b1, gi));
    const float vi = __fadd_rn(__fmul_rn(a.b2, v[i]), __fmul_rn(__fmul_rn(1.f - a.b2, gi), gi));
    pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(a.step_size, mi), __fadd_rn(__fdiv_rn(sqrtf(vi), a.bc2s), a.eps)));
    p[i] = pi, m[i] = mi, v[i] = vi;
    p16[i] = __float2bfloat16(pi);
  }
}

// p16 = bf16(p): after the caller wrote the f32 masters.
__global__ inline void f32_to_bf16_kernel(const float* __restrict__ p, bf16* __restrict__ p16, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p16[i] = __float2bfloat16(p[i]);
}

}  // namespace model_detail

}  // namespace staticgrad::cuda
