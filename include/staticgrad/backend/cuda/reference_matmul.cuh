#pragma once
// A plain tiled matrix product with rm_matmul's contract (matmul.cuh), for
// the runs that cannot use cuBLASLt: compute-sanitizer's racecheck stops
// inside cuBLASLt's Hopper kernels ("Internal Sanitizer Error", docs/cuda.md,
// "Sanitizers"), so with STATICGRAD_MATMUL=reference in the environment every
// rm_matmul launches this kernel instead and a whole training step can run
// under racecheck, which then also checks this kernel's shared memory.
// Not for speed (one output per thread, no tensor cores).
//
//   C[M, N] = alpha * op(A) op(B) + beta * C   (row-major, A and B bf16,
//   C bf16 or f32, f32 accumulation in k order; beta == 0: C is not read)
//
// Launch: 16 x 16 threads per CTA, one CTA per 16 x 16 tile of C (grid.x over
// N, grid.y over M, so M <= 65535 * 16). Each k step stages a 16 x 16 tile of
// op(A) and of op(B) in shared memory (f32, rows padded to 17 against bank
// conflicts), between two __syncthreads.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

namespace reference_matmul_detail {
inline constexpr int tile = 16;
inline constexpr std::int64_t max_grid_y = 65535;
__device__ inline float to_f32(float v) { return v; }
__device__ inline float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ inline T from_f32(float v) {
  if constexpr (sizeof(T) == 4) return v;
  else return __float2bfloat16_rn(v);
}
}  // namespace reference_matmul_detail

// One thread per element of C; a template, so that every translation unit
// that includes matmul.cuh may instantiate it (one definition at link time).
template <class CType>
__global__ void reference_matmul_kernel(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                                        CType* C, std::int64_t M, std::int64_t N, std::int64_t K, bool trans_a,
                                        bool trans_b, std::int64_t lda, std::int64_t ldb, std::int64_t ldc, float alpha,
                                        float beta) {
  namespace d = reference_matmul_detail;
  __shared__ float a_tile[d::tile][d::tile + 1];  // [row of C][k]
  __shared__ float b_tile[d::tile][d::tile + 1];  // [k][column of C]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t row = std::int64_t(blockIdx.y) * d::tile + ty, col = std::int64_t(blockIdx.x) * d::tile + tx;
  float acc = 0.f;
  for (std::int64_t k0 = 0; k0 < K; k0 += d::tile) {
    const std::int64_t ka = k0 + tx, kb = k0 + ty;
    a_tile[ty][tx] = row < M && ka < K ? d::to_f32(trans_a ? A[ka * lda + row] : A[row * lda + ka]) : 0.f;
    b_tile[ty][tx] = kb < K && col < N ? d::to_f32(trans_b ? B[col * ldb + kb] : B[kb * ldb + col]) : 0.f;
    __syncthreads();
    for (int k = 0; k < d::tile; ++k) acc += a_tile[ty][k] * b_tile[k][tx];
    __syncthreads();
  }
  if (row >= M || col >= N) return;
  CType* c = C + row * ldc + col;
  float v = alpha * acc;
  if (beta != 0.f) v += beta * d::to_f32(*c);
  *c = d::from_f32<CType>(v);
}

// Launcher: c_is_f32 selects C's type (f32, else bf16).
inline void launch_reference_matmul(const void* A, const void* B, void* C, bool c_is_f32, std::int64_t M,
                                    std::int64_t N, std::int64_t K, bool trans_a, bool trans_b, std::int64_t lda,
                                    std::int64_t ldb, std::int64_t ldc, float alpha, float beta, cudaStream_t stream) {
  namespace d = reference_matmul_detail;
  const std::int64_t gy = (M + d::tile - 1) / d::tile;
  if (gy > d::max_grid_y)
    throw error("reference matmul: M = " + std::to_string(M) + " rows exceed its grid (at most " +
                std::to_string(d::max_grid_y * d::tile) + ")");
  const dim3 grid(static_cast<unsigned>((N + d::tile - 1) / d::tile), static_cast<unsigned>(gy)), block(d::tile, d::tile);
  const auto* a = static_cast<const __nv_bfloat16*>(A);
  const auto* b = static_cast<const __nv_bfloat16*>(B);
  if (c_is_f32)
    reference_matmul_kernel<float><<<grid, block, 0, stream>>>(a, b, static_cast<float*>(C), M, N, K, trans_a, trans_b,
                                                              lda, ldb, ldc, alpha, beta);
  else
    reference_matmul_kernel<__nv_bfloat16><<<grid, block, 0, stream>>>(a, b, static_cast<__nv_bfloat16*>(C), M, N, K,
                                                                      trans_a, trans_b, lda, ldb, ldc, alpha, beta);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace staticgrad::cuda
