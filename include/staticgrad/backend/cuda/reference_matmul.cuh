#pragma once
// A plain matrix product with rm_matmul's contract (matmul.cuh), for the runs
// that cannot use cuBLASLt: compute-sanitizer's racecheck stops inside
// cuBLASLt's Hopper kernels ("Internal Sanitizer Error", docs/cuda.md,
// "Sanitizers"), so with STATICGRAD_MATMUL=reference in the environment every
// rm_matmul launches this kernel instead and a whole training step can run
// under racecheck. Not for speed (one output per thread, no tensor cores).
//
//   C[M, N] = alpha * op(A) op(B) + beta * C   (row-major, A and B bf16,
//   C bf16 or f32, f32 accumulation in k order; beta == 0: C is not read)
//
// Launch: 32 x 8 threads per CTA, one CTA per 8 x 32 tile of C (grid.x over
// N, grid.y over M, so M <= 65535 * 8); each thread reads its row of op(A)
// and its column of op(B) straight from global memory (a warp shares the row
// of A and reads 32 neighbouring columns of B, so the loads are broadcast or
// coalesced when B is not transposed, and served by L1 when it is).
// Why no shared memory: racecheck instruments every shared-memory access and
// nothing else, so a tiled version (the first one: 16 x 16 tiles staged in
// shared memory) made the products 2 MACs = 2 instrumented loads each and a
// whole model step ran past 420 s under racecheck; without shared memory the
// products run at the speed they run uninstrumented and racecheck's time goes
// to the kernels it is there to check.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

namespace reference_matmul_detail {
inline constexpr int cols_per_cta = 32;  // one warp across N
inline constexpr int rows_per_cta = 8;
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
  const std::int64_t row = std::int64_t(blockIdx.y) * d::rows_per_cta + threadIdx.y;
  const std::int64_t col = std::int64_t(blockIdx.x) * d::cols_per_cta + threadIdx.x;
  if (row >= M || col >= N) return;
  // op(A)[row, k] = A[row, k] or A[k, row]; op(B)[k, col] = B[k, col] or B[col, k].
  const std::int64_t a_step = trans_a ? lda : 1, b_step = trans_b ? 1 : ldb;
  const __nv_bfloat16* a = A + (trans_a ? row : row * lda);
  const __nv_bfloat16* b = B + (trans_b ? col * ldb : col);
  float acc = 0.f;
  for (std::int64_t k = 0; k < K; ++k) acc += d::to_f32(a[k * a_step]) * d::to_f32(b[k * b_step]);
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
  const std::int64_t gy = (M + d::rows_per_cta - 1) / d::rows_per_cta;
  if (gy > d::max_grid_y)
    throw error("reference matmul: M = " + std::to_string(M) + " rows exceed its grid (at most " +
                std::to_string(d::max_grid_y * d::rows_per_cta) + ")");
  const dim3 grid(static_cast<unsigned>((N + d::cols_per_cta - 1) / d::cols_per_cta), static_cast<unsigned>(gy)),
      block(d::cols_per_cta, d::rows_per_cta);
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
