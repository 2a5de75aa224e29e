#pragma once
// The kernels of the CUDA decoder (cuda_decoder.cuh), then their launchers.
// Shapes per feed of n tokens at positions [p0, p0 + n): H hidden, nh query
// heads, nkv key/value heads, d head_dim, KV = nkv * d, I intermediate.
// Residual stream and every product's output f32; product inputs bf16
// (cuBLAS reads bf16 and accumulates in f32); softmax, norms, RoPE in f32.
// No fmt here or in what it includes: nvcc's host pass rejects it.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::infer::cuda_decode {

using bf16 = __nv_bfloat16;

inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  throw error(std::string(call) + " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ") at " +
              file + ":" + std::to_string(line));
}

// ---- kernels ---------------------------------------------------------------

// Sum (or max) over the block; every thread gets the result. blockDim.x is a
// multiple of 32; `red` is 32 floats of shared memory.
template <bool Max>
__device__ inline float block_reduce(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = Max ? fmaxf(v, w) : v + w;
  }
  __syncthreads();  // the previous call's readers are done with `red`
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < int(blockDim.x / 32); ++w) r = Max ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

// x[t, :] = E[ids[t], :].  ids [n], E bf16 [V, H], x f32 [n, H]; grid n.
__global__ inline void embed_kernel(const std::int32_t* __restrict__ ids, const bf16* __restrict__ E,
                                    float* __restrict__ x, int H) {
  const bf16* e = E + std::int64_t(ids[blockIdx.x]) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) x[std::int64_t(blockIdx.x) * H + i] = __bfloat162float(e[i]);
}

// Qwen2RMSNorm in f32, out = w * (x * rsqrt(mean(x^2) + eps)) rounded to
// bf16 (the next product's input). x f32 [n, H], w f32 [H], out bf16 [n, H]; grid n.
__global__ inline void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                      bf16* __restrict__ out, int H, float eps) {
  __shared__ float red[32];
  const float* row = x + std::int64_t(blockIdx.x) * H;
  float ss = 0;
  for (int i = threadIdx.x; i < H; i += blockDim.x) ss += row[i] * row[i];
  const float r = 1.0f / sqrtf(block_reduce<false>(ss, red) / float(H) + eps);
  for (int i = threadIdx.x; i < H; i += blockDim.x)
    out[std::int64_t(blockIdx.x) * H + i] = __float2bfloat16(w[i] * (row[i] * r));
}

// y[t] += bias (null: none), then (rotate) RoPE of each d-wide head group at position
// p0 + t: (a, b) = (y[i], y[i + d/2]) -> (a cos - b sin, b cos + a sin),
// angle = float(p0 + t) * inv_freq[i] in f32 as transformers computes it.
// y f32 [n, heads * d] with row stride ld, bias f32 [heads * d]; grid n.
__global__ inline void bias_rope_kernel(float* __restrict__ y, int ld, const float* __restrict__ bias, int heads,
                                        int d, int p0, const float* __restrict__ inv_freq, bool rotate) {
  float* row = y + std::int64_t(blockIdx.x) * ld;
  const int half = d / 2;
  const float pos = float(p0 + int(blockIdx.x));
  for (int k = threadIdx.x; k < heads * half; k += blockDim.x) {
    const int h = k / half, i = k % half, lo = h * d + i, hi = lo + half;
    const float a = row[lo] + (bias ? bias[lo] : 0.0f), b = row[hi] + (bias ? bias[hi] : 0.0f);
    if (!rotate) {
      row[lo] = a, row[hi] = b;
      continue;
    }
    const float ang = pos * inv_freq[i];
    const float cs = cosf(ang), sn = sinf(ang);
    row[lo] = a * cs - b * sn;
    row[hi] = b * cs + a * sn;
  }
}

inline constexpr int attention_threads = 128;
inline constexpr int attention_dims_per_thread = 4;  // head_dim <= 512

// Causal attention of query t (position p0 + t) over cached keys 0..p0 + t,
// one block per (t, head), online softmax over chunks of blockDim keys in f32.
// q f32 [n, nh * d]; kc, vc f32 [positions, KV] (this layer's cache, K after
// RoPE); out bf16 [n, nh * d]; head h reads KV head h / (nh / nkv) (GQA).
// grid (n, nh); shared: d + blockDim + 32 floats.
__global__ inline void __launch_bounds__(attention_threads)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ kc, const float* __restrict__ vc,
                     bf16* __restrict__ out, int p0, int nh, int nkv, int d, float scale) {
  extern __shared__ float sm[];
  float* qs = sm;
  float* ps = sm + d;
  float* red = ps + blockDim.x;
  const int t = blockIdx.x, h = blockIdx.y, g = h / (nh / nkv), KV = nkv * d;
  const std::int64_t qrow = std::int64_t(t) * nh * d + std::int64_t(h) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) qs[i] = q[qrow + i];
  __syncthreads();
  const int keys = p0 + t + 1;
  float acc[attention_dims_per_thread] = {};
  float m = -INFINITY, l = 0;
  for (int j0 = 0; j0 < keys; j0 += blockDim.x) {
    const int j = j0 + threadIdx.x;
    float s = -INFINITY;
    if (j < keys) {
      const float* kr = kc + std::int64_t(j) * KV + g * d;
      float dot = 0;
      for (int i = 0; i < d; ++i) dot += qs[i] * kr[i];
      s = dot * scale;
    }
    const float mn = fmaxf(m, block_reduce<true>(s, red));  // finite: key j0 is visible
    const float p = j < keys ? expf(s - mn) : 0.0f;
    ps[threadIdx.x] = p;
    const float corr = expf(m - mn);  // 0 on the first chunk (m = -inf)
    l = l * corr + block_reduce<false>(p, red);  // its barriers also publish ps
    const int cnt = min(int(blockDim.x), keys - j0);
    for (int r = 0; r < attention_dims_per_thread; ++r) {
      const int i = threadIdx.x + r * int(blockDim.x);
      if (i >= d) break;
      float a = acc[r] * corr;
      for (int jj = 0; jj < cnt; ++jj) a += ps[jj] * vc[std::int64_t(j0 + jj) * KV + g * d + i];
      acc[r] = a;
    }
    m = mn;
    __syncthreads();  // everyone has read ps before the next chunk writes it
  }
  for (int r = 0; r < attention_dims_per_thread; ++r) {
    const int i = threadIdx.x + r * int(blockDim.x);
    if (i < d) out[qrow + i] = __float2bfloat16(acc[r] / l);
  }
}

// out = silu(g) * u = g / (1 + exp(-g)) * u.  g, u f32 [n * I]; out bf16.
__global__ inline void swiglu_kernel(const float* __restrict__ g, const float* __restrict__ u, bf16* __restrict__ out,
                                     std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(g[i] / (1.0f + expf(-g[i])) * u[i]);
}

// ---- launchers -------------------------------------------------------------

inline void embed(const std::int32_t* ids, const bf16* E, float* x, int n, int H, cudaStream_t s) {
  embed_kernel<<<n, 256, 0, s>>>(ids, E, x, H);
  SG_CUDA_CHECK(cudaGetLastError());
}

inline void rmsnorm(const float* x, const float* w, bf16* out, int n, int H, float eps, cudaStream_t s) {
  rmsnorm_kernel<<<n, 256, 0, s>>>(x, w, out, H, eps);
  SG_CUDA_CHECK(cudaGetLastError());
}

inline void bias_rope(float* y, int ld, const float* bias, int n, int heads, int d, int p0, const float* inv_freq,
                      bool rotate, cudaStream_t s) {
  bias_rope_kernel<<<n, 128, 0, s>>>(y, ld, bias, heads, d, p0, inv_freq, rotate);
  SG_CUDA_CHECK(cudaGetLastError());
}

inline void attention(const float* q, const float* kc, const float* vc, bf16* out, int n, int p0, int nh, int nkv,
                      int d, cudaStream_t s) {
  if (d > attention_threads * attention_dims_per_thread)
    throw error("CUDA decoder: head_dim " + std::to_string(d) + " is above the attention kernel's " +
                std::to_string(attention_threads * attention_dims_per_thread));
  const int smem = int(sizeof(float)) * (d + attention_threads + 32);
  attention_kernel<<<dim3(unsigned(n), unsigned(nh)), attention_threads, smem, s>>>(q, kc, vc, out, p0, nh, nkv, d,
                                                                                    1.0f / std::sqrt(float(d)));
  SG_CUDA_CHECK(cudaGetLastError());
}

inline void swiglu(const float* g, const float* u, bf16* out, std::int64_t count, cudaStream_t s) {
  const int blocks = int(std::min<std::int64_t>((count + 255) / 256, 4096));
  swiglu_kernel<<<blocks, 256, 0, s>>>(g, u, out, count);
  SG_CUDA_CHECK(cudaGetLastError());
}

// Row-major y[n, out] = alpha * x[n, in] W[out, in]^T + beta * y (y's row
// stride ldy), x and W bf16, y f32 or bf16, f32 accumulation. Column-major
// cuBLAS sees y^T [out, n] = op_T(W^T [in, out]) * x^T [in, n].
inline void gemm_xwt(cublasHandle_t handle, int n, int out, int in, const bf16* x, const bf16* W, void* y,
                     cudaDataType_t y_type, int ldy, float alpha, float beta) {
  check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, W, CUDA_R_16BF, in, x, CUDA_R_16BF,
                            in, &beta, y, y_type, ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx", __FILE__, __LINE__);
}

}  // namespace staticgrad::infer::cuda_decode
