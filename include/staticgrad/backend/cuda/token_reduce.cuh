#pragma once
// Skinny reductions over the token dimension: the LoRA weight gradients
//   dA [r, in]  (+)= dZ^T X     (small operand dZ [T, r], large X [T, in])
//   dB [out, r] (+)= dY^T Z     (large dY [T, out], small Z [T, r], written transposed)
// i.e. C = alpha * A^T B + beta * C with K = T (16 k tokens) and one of M, N
// only r (16..64). cuBLASLt's kernels are built for large M and N; this
// shape is bandwidth-bound (it must read the large operand once) and
// cuBLASLt's best reaches well under the copy bandwidth on it.
//
// Two passes, deterministic:
//  1. token_reduce_partial_kernel: grid (large / 128 column tiles, splits);
//     CTA (tile, split) reduces tokens [split * chunk, (split + 1) * chunk)
//     into partial[split][small][large] (f32). 4 warps x 32 columns; the
//     tensor cores (mma.sync m16n8k16, bf16 in, f32 accumulate) with
//     M = the small dimension (Small / 16 m-tiles), N = 32 columns a warp,
//     K = tokens; both operands are read "transposed" from shared memory
//     with ldmatrix.trans (stored [token][column]). Tokens stream through a
//     3-stage cp.async ring of 64 tokens (large tile 64 x 128, small 64 x Small).
//  2. token_reduce_final_kernel: sums the splits in order (fixed order: the
//     same bits every run) and applies alpha, beta into C.
// rm_matmul (matmul.cuh) offers this as one more candidate to its per-shape
// tuning, for the shapes it applies to (token_reduce_plan::make), and keeps
// it only where it is faster than cuBLASLt's candidates.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "staticgrad/backend/cuda/check.cuh"

namespace staticgrad::cuda {

namespace token_reduce_detail {

constexpr int tile_cols = 128;  // large-dimension columns per CTA
constexpr int step = 64;        // tokens per pipeline stage
constexpr int stages = 3;
constexpr int threads = 128;
constexpr int ld_large = tile_cols + 8;  // smem row stride (bf16): +16 B keeps ldmatrix free of bank conflicts

template <int Small>
constexpr int ld_small = Small + 8;
template <int Small>
constexpr int smem_bytes = stages * step * (ld_large + ld_small<Small>) * 2;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace token_reduce_detail

// partial[split][i][j] = sum over tokens t of the split's chunk of small[t][i] * large[t][j].
// small: [K, Small] (ld_small_g), large: [K, cols] (ld_large_g); 16-byte aligned rows.
template <int Small>
__global__ void __launch_bounds__(token_reduce_detail::threads)
    token_reduce_partial_kernel(const __nv_bfloat16* __restrict__ small, std::int64_t ld_small_g,
                                const __nv_bfloat16* __restrict__ large, std::int64_t ld_large_g, std::int64_t K,
                                std::int64_t cols, std::int64_t chunk, float* __restrict__ partial) {
  using namespace token_reduce_detail;
  static_assert(Small % 16 == 0 && Small <= 64, "the small dimension is 16, 32, 48 or 64 (m16 tiles)");
  constexpr int LS = ld_small<Small>, MT = Small / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* Ls = reinterpret_cast<__nv_bfloat16*>(smem_raw);      // [stages][step][ld_large]
  auto* Ss = Ls + stages * step * ld_large;                      // [stages][step][LS]

  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * tile_cols;
  const std::int64_t t0 = static_cast<std::int64_t>(blockIdx.y) * chunk;
  const std::int64_t t_end = t0 + chunk < K ? t0 + chunk : K;
  const int nsteps = t_end > t0 ? static_cast<int>((t_end - t0 + step - 1) / step) : 0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  auto issue = [&](int st) {
    const int buf = st % stages;
    const std::int64_t tok0 = t0 + static_cast<std::int64_t>(st) * step;
    // large: step x 128 columns = 1024 chunks of 8 bf16
    for (int c = threadIdx.x; c < step * tile_cols / 8; c += threads) {
      const int r = c / (tile_cols / 8), cc = c % (tile_cols / 8);
      const std::int64_t tok = tok0 + r, col = col0 + cc * 8;
      const bool ok = tok < t_end && col < cols;  // cols % 8 == 0 (checked on the host)
      cp_async16(Ls + (buf * step + r) * ld_large + cc * 8, large + (ok ? tok * ld_large_g + col : 0), ok);
    }
    for (int c = threadIdx.x; c < step * Small / 8; c += threads) {
      const int r = c / (Small / 8), cc = c % (Small / 8);
      const std::int64_t tok = tok0 + r;
      const bool ok = tok < t_end;
      cp_async16(Ss + (buf * step + r) * LS + cc * 8, small + (ok ? tok * ld_small_g + cc * 8 : 0), ok);
    }
  };

  float acc[MT][4][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[m][n][c] = 0.f;

#pragma unroll
  for (int st = 0; st < stages - 1; ++st) {
    if (st < nsteps) issue(st);
    cp_async_commit();
  }
  for (int st = 0; st < nsteps; ++st) {
    cp_async_wait<stages - 2>();
    __syncthreads();  // stage st visible; every warp is done with stage st - 1, which the next issue overwrites
    if (st + stages - 1 < nsteps) issue(st + stages - 1);
    cp_async_commit();
    const int buf = st % stages;
    const __nv_bfloat16* L = Ls + buf * step * ld_large + warp * 32;
    const __nv_bfloat16* S = Ss + buf * step * LS;
#pragma unroll
    for (int ks = 0; ks < step / 16; ++ks) {
      // A = small^T (m = small index, k = token): ldmatrix.trans of the stored
      // [token][small] 16 x 16 block; matrix i = lane / 8 covers
      // (small 8 (i % 2) .., tokens 8 (i / 2) ..).
      std::uint32_t a[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
        ldmatrix_x4_trans(a[m], S + (ks * 16 + (lane / 16) * 8 + lane % 8) * LS + m * 16 + ((lane / 8) % 2) * 8);
      // B = large (k = token, n = column), stored [token][column]: matrices
      // (tokens 0-7, n 0-7), (tokens 8-15, n 0-7), (tokens 0-7, n 8-15), (tokens 8-15, n 8-15).
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, L + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * ld_large + np * 16 + (lane / 16) * 8);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_bf16(acc[m][2 * np], a[m], b[0], b[1]);
          mma_bf16(acc[m][2 * np + 1], a[m], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  float* out = partial + static_cast<std::int64_t>(blockIdx.y) * Small * cols;
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const std::int64_t col = col0 + warp * 32 + n * 8 + 2 * t;
      if (col >= cols) continue;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m * 16 + g + 8 * h;
        *reinterpret_cast<float2*>(out + row * cols + col) = make_float2(acc[m][n][2 * h], acc[m][n][2 * h + 1]);
      }
    }
}

// C = alpha * sum_split partial[split] + beta * C; C[i][j] at i * ldc + j, or
// at j * ldc + i when `transposed` (C is [large, small]). beta == 0 reads nothing.
// (A template only so that the header can define it in every translation unit.)
template <int = 0>
__global__ void token_reduce_final_kernel(const float* __restrict__ partial, int splits, int small, std::int64_t cols,
                                          float* C, std::int64_t ldc, bool transposed, float alpha, float beta) {
  const std::int64_t n = static_cast<std::int64_t>(small) * cols;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    // transposed: consecutive threads walk the small index, so the writes to C[j][i] coalesce
    const std::int64_t i = transposed ? e % small : e / cols, j = transposed ? e / small : e % cols;
    float s = 0.f;
    for (int k = 0; k < splits; ++k) s += partial[static_cast<std::int64_t>(k) * n + i * cols + j];
    float* c = C + (transposed ? j * ldc + i : i * ldc + j);
    *c = beta == 0.f ? alpha * s : alpha * s + beta * *c;
  }
}

// A prepared reduction for one shape: C = alpha * A^T B + beta * C (row-major
// A [K, M], B [K, N], C f32 [M, N]) where M or N is the small dimension.
struct token_reduce_plan {
  bool valid = false;
  bool small_is_a = true;  // M small (dA); else N small (dB: C written transposed)
  int small = 0, splits = 0;
  std::int64_t K = 0, cols = 0, chunk = 0;
  std::size_t workspace = 0;  // partial sums, bytes

  // A plan when the shape fits (small dimension 16/32/48/64, large
  // dimension a multiple of 8, K >= 1024, leading dimensions multiples of 8
  // elements) and its partials fit in `max_workspace`; else valid == false.
  static token_reduce_plan make(std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t lda, std::int64_t ldb,
                                std::size_t max_workspace) {
    token_reduce_plan p;
    auto small_ok = [](std::int64_t x) { return x % 16 == 0 && x >= 16 && x <= 64; };
    if (K < 1024 || lda % 8 != 0 || ldb % 8 != 0) return p;
    if (small_ok(M) && N % 8 == 0 && N > 64) p.small_is_a = true, p.small = static_cast<int>(M), p.cols = N;
    else if (small_ok(N) && M % 8 == 0 && M > 64) p.small_is_a = false, p.small = static_cast<int>(N), p.cols = M;
    else return p;
    p.K = K;
    // About 4 waves of 132 SMs, chunks of at least 256 tokens, a multiple of the stage.
    const std::int64_t tiles = (p.cols + token_reduce_detail::tile_cols - 1) / token_reduce_detail::tile_cols;
    std::int64_t splits = (4 * 132 + tiles - 1) / tiles;
    const std::int64_t max_splits = K / 256;
    splits = splits < 1 ? 1 : (splits > max_splits ? max_splits : splits);
    const std::size_t per_split = static_cast<std::size_t>(p.small) * static_cast<std::size_t>(p.cols) * 4;
    if (per_split * static_cast<std::size_t>(splits) > max_workspace)
      splits = static_cast<std::int64_t>(max_workspace / per_split);
    if (splits < 1 || splits > 65535) return p;
    const std::int64_t step = token_reduce_detail::step;
    p.chunk = ((K + splits - 1) / splits + step - 1) / step * step;
    p.splits = static_cast<int>((K + p.chunk - 1) / p.chunk);
    p.workspace = per_split * static_cast<std::size_t>(p.splits);
    p.valid = true;
    return p;
  }

  // A, B bf16 16-byte aligned; workspace >= this->workspace bytes, 16-byte aligned.
  void run(cudaStream_t stream, const void* A, std::int64_t lda, const void* B, std::int64_t ldb, float* C,
           std::int64_t ldc, float alpha, float beta, void* workspace) const {
    using namespace token_reduce_detail;
    const auto* small_p = static_cast<const __nv_bfloat16*>(small_is_a ? A : B);
    const auto* large_p = static_cast<const __nv_bfloat16*>(small_is_a ? B : A);
    const std::int64_t ld_s = small_is_a ? lda : ldb, ld_l = small_is_a ? ldb : lda;
    auto* partial = static_cast<float*>(workspace);
    const dim3 grid(static_cast<unsigned>((cols + tile_cols - 1) / tile_cols), static_cast<unsigned>(splits));
    switch (small) {
      case 16: launch<16>(grid, stream, small_p, ld_s, large_p, ld_l, partial, C, ldc, alpha, beta); break;
      case 32: launch<32>(grid, stream, small_p, ld_s, large_p, ld_l, partial, C, ldc, alpha, beta); break;
      case 48: launch<48>(grid, stream, small_p, ld_s, large_p, ld_l, partial, C, ldc, alpha, beta); break;
      default: launch<64>(grid, stream, small_p, ld_s, large_p, ld_l, partial, C, ldc, alpha, beta); break;
    }
  }

 private:
  // Both passes for one small dimension. Declared here, defined below the
  // class (so not inline): STATICGRAD_TOKEN_REDUCE_INSTANTIATE names it.
  template <int Small>
  void launch(dim3 grid, cudaStream_t stream, const __nv_bfloat16* s, std::int64_t ld_s, const __nv_bfloat16* l,
              std::int64_t ld_l, float* partial, float* C, std::int64_t ldc, float alpha, float beta) const;
};

template <int Small>
void token_reduce_plan::launch(dim3 grid, cudaStream_t stream, const __nv_bfloat16* s, std::int64_t ld_s,
                               const __nv_bfloat16* l, std::int64_t ld_l, float* partial, float* C, std::int64_t ldc,
                               float alpha, float beta) const {
  using namespace token_reduce_detail;
  const auto kernel = token_reduce_partial_kernel<Small>;
  constexpr int bytes = smem_bytes<Small>;
  if constexpr (bytes > 48 * 1024)
    SG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<grid, threads, bytes, stream>>>(s, ld_s, l, ld_l, K, cols, chunk, partial);
  SG_CUDA_CHECK(cudaGetLastError());
  const std::int64_t n = static_cast<std::int64_t>(small) * cols;
  const std::int64_t blocks = (n + 255) / 256;
  token_reduce_final_kernel<><<<static_cast<unsigned>(blocks < 2048 ? blocks : 2048), 256, 0, stream>>>(
      partial, splits, small, cols, C, ldc, !small_is_a, alpha, beta);
  SG_CUDA_CHECK(cudaGetLastError());
}

// The kernels' launchers as explicit instantiations (the same scheme as
// attention.cuh's STATICGRAD_ATTENTION_INSTANTIATE): `extern` where the
// project's build compiles them once (src/cuda/token_reduce_kernels.cu).
#define STATICGRAD_TOKEN_REDUCE_INSTANTIATE(PREFIX, Small)                                                        \
  PREFIX template void token_reduce_plan::launch<Small>(dim3, cudaStream_t, const __nv_bfloat16*, std::int64_t, \
                                                        const __nv_bfloat16*, std::int64_t, float*, float*,      \
                                                        std::int64_t, float, float) const;
#ifdef STATICGRAD_CUDA_PRECOMPILED_KERNELS
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(extern, 16)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(extern, 32)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(extern, 48)
STATICGRAD_TOKEN_REDUCE_INSTANTIATE(extern, 64)
#endif

}  // namespace staticgrad::cuda
