#pragma once
// Causal grouped-query flash attention on CUDA (forward and backward) over
// packed sequences: the GPU executor of the "attention" plan group. The
// contract is the CPU reference's (backend/cpu/attention.hpp):
//
//   q, out, dout, dq : [T, H * D]  bf16   head h occupies columns [h*D, (h+1)*D)
//   k, v, dk, dv     : [T, KV * D] bf16
//   lse              : [T, H]      f32    natural-log log-sum-exp of the scaled scores
//   seq_start        : [S + 1]     int32  (device) 0 = s_0 < s_1 < ... < s_S = T
//   workspace        : [T, H]      f32    backward only: D_i = rowsum(dout_i * out_i)
//
// Invariants:
//  - scale = 1/sqrt(D); query head h reads KV head h / (H / KV); H % KV == 0.
//  - Query i of sequence [b, e) attends to keys b <= j <= i, never across a
//    sequence start. Every tile is aligned to its sequence's start (tiles are
//    (sequence, block) work items, see `work_item`), so the only masks are the
//    causal diagonal and the tail of the sequence (rows >= e, zero-filled in
//    shared memory, never stored). Key blocks entirely above the diagonal are
//    never visited.
//  - bf16 in memory and as tensor-core operands; scores, softmax, lse and all
//    accumulators in f32. P (forward) and P, dS (backward) are rounded to bf16
//    before their products, as in every flash-attention kernel.
//  - Backward overwrites dq, dk, dv and is deterministic: no atomics.
//      * dk, dv: one CTA per (sequence, key block, KV head) loops over the H/KV
//        query heads of the group and the query blocks at or below the
//        diagonal, accumulating in registers (f32) and writing bf16 once.
//      * dq: a separate pass, one CTA per (sequence, query block, head) looping
//        over key blocks (the forward's shape). It recomputes S and dP (2 of
//        the 5 backward products again: 7 instead of 5), the price of
//        determinism without a f32 dq buffer and atomics.
//  - Tensor cores through mma.sync.m16n8k16 (bf16 in, f32 accumulate) in
//    inline PTX. Operand fragments are read from shared memory by ldmatrix.x4
//    (.trans for transposed operands), or with STATICGRAD_ATTN_LDMATRIX=0 by
//    plain 32-bit / paired 16-bit loads (see load_a); rows are padded by 8
//    bf16 (16 bytes) so either is free of bank conflicts.
//  - Global -> shared copies are 16-byte cp.async with zero fill past the end
//    of the sequence (the source pointer is then clamped to a valid row).
//  - Requirements checked on the host: D in {64, 128}; every pointer 16-byte
//    aligned; T < 2^31. seq_start is trusted to be a valid layout (the CPU
//    validate_layout checks it where it is built); the kernels still clamp to
//    [0, T] so a bad layout cannot make them read or write out of bounds.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/hopper/attention_bwd_sm90.cuh"
#include "staticgrad/backend/cuda/hopper/attention_fwd_sm90.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda {

// ---- kernel configurations --------------------------------------------------
//
// One traits struct per kernel configuration. All three kernels use 4 warps,
// each warp owning 16 rows of the CTA's row block (the M of one m16n8k16).

template <int HeadDim>
struct attention_fwd_traits {
  static_assert(HeadDim == 64 || HeadDim == 128,
                "attention kernels are instantiated for head_dim 64 (Qwen2.5-0.5B) and 128 (1.5B..72B); "
                "another head dim needs its register budget checked (the O accumulator is HeadDim/2 f32 per thread)");
  static constexpr int head_dim = HeadDim;
  static constexpr int warps = 4;
  static constexpr int threads = warps * 32;
  static constexpr int block_m = 16 * warps;  // queries per CTA: 16 per warp
  static constexpr int block_n = 64;          // keys per inner step: S tile = 64/8 = 8 m16n8 tiles
  static constexpr int ld = HeadDim + 8;      // smem row stride (bf16): +16 B breaks bank conflicts
  static constexpr int smem_bytes = (block_m + 2 * block_n) * ld * 2;  // Q, K, V tiles
};

// dq pass: same shape as the forward (rows = queries, loop over key blocks).
template <int HeadDim>
struct attention_dq_traits {
  static_assert(HeadDim == 64 || HeadDim == 128, "attention_dq_traits: head_dim must be 64 or 128");
  static constexpr int head_dim = HeadDim;
  static constexpr int warps = 4;
  static constexpr int threads = warps * 32;
  static constexpr int block_m = 16 * warps;
  static constexpr int block_n = 64;
  static constexpr int ld = HeadDim + 8;
  // Q, dO tiles and two buffers of K, V (the next key block is copied while
  // this one is used): 104 KiB at D = 128, 2 CTAs per SM fit in 227 KiB.
  static constexpr int smem_bytes = (2 * block_m + 4 * block_n) * ld * 2;
};

// dk/dv pass: rows = keys, loop over (query head of the group, query block).
// Registers per thread: dK and dV accumulators HeadDim/2 f32 each, S^T and
// dP^T block_m/2 each; block_m = 32 at HeadDim 128 keeps that at 160 (<= 255
// with addresses, no spills), 64 at HeadDim 64 (128).
template <int HeadDim>
struct attention_dkdv_traits {
  static_assert(HeadDim == 64 || HeadDim == 128, "attention_dkdv_traits: head_dim must be 64 or 128");
  static constexpr int head_dim = HeadDim;
  static constexpr int warps = 4;
  static constexpr int threads = warps * 32;
  static constexpr int block_n = 16 * warps;            // keys per CTA
  static constexpr int block_m = HeadDim == 128 ? 32 : 64;  // queries per inner step
  static_assert(block_n % block_m == 0,
                "key blocks must be a whole number of query blocks so that the first query block of a key "
                "block starts exactly at its diagonal");
  static constexpr int ld = HeadDim + 8;
  // K, V tiles and two buffers of (Q, dO, lse, D): the next (head, query
  // block) is copied while this one is used. 69 KiB at D = 128, 55 KiB at 64.
  static constexpr int smem_bytes = 2 * block_n * ld * 2 + 2 * (2 * block_m * ld * 2 + 2 * block_m * 4);
};

namespace attn_detail {

constexpr float log2e = 1.4426950408889634f;
constexpr float ln2 = 0.6931471805599453f;

// ---- PTX wrappers -------------------------------------------------------------

// D = A B + D, m16n8k16, A row-major 16x16 bf16 (4 regs), B "col" 16x8 bf16
// (2 regs), C/D 16x8 f32. Fragment layout (PTX ISA, lane = 4 g + t):
//   a0: (g, 2t..2t+1)  a1: (g+8, 2t..)  a2: (g, 2t+8..)  a3: (g+8, 2t+8..)
//   b0: (k 2t..2t+1, n g)  b1: (k 2t+8..2t+9, n g)
//   c0,c1: (g, 2t, 2t+1)   c2,c3: (g+8, 2t, 2t+1)
// The lower 16 bits of a register hold the element with the smaller k (or col).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                         std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte global -> shared copy; src_valid == false writes 16 zero bytes
// (cp.async's src-size 0) and reads nothing.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool src_valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = src_valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ std::uint32_t ld32(const __nv_bfloat16* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}
// Two bf16 from different rows packed as one operand register (lo = first).
__device__ __forceinline__ std::uint32_t pack2(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<std::uint32_t>(__bfloat16_as_ushort(lo)) |
         (static_cast<std::uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}
__device__ __forceinline__ std::uint32_t pack_f2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo (low half)
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// ---- operand fragments from shared memory --------------------------------------
//
// Three shapes cover every product here. `p` points at element (row 0, col 0)
// of the 16 x 16 (A) or 16 x 16 (two n8 tiles of B) sub-tile; Ld is the smem
// row stride in elements (a multiple of 8: rows are 16-byte aligned).
//  load_a    : A (16 x 16, row-major [m][k]) -> a[4]
//  load_b    : B for n8 tiles n, n+8 where smem holds B^T row-major [n][k]
//              (K in Q K^T, Q / dO in K Q^T / V dO^T)       -> b[2][2]
//  load_b_t  : B for n8 tiles n, n+8 where smem holds B row-major [k][n]
//              (V in P V, K in dS K, dO / Q in P^T dO / dS^T Q) -> b[2][2]
// With STATICGRAD_ATTN_LDMATRIX (default 1) they are one ldmatrix.x4 each
// (.trans for load_b_t): lanes 8i..8i+7 give the row addresses of 8x8 matrix
// i, and lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of each matrix
// (of its transpose with .trans), which is exactly the mma fragment layout.
// With 0 they are plain 32-bit / paired 16-bit loads of the same elements
// (slower, kept as the reference path: build with
// -DSTATICGRAD_ATTN_LDMATRIX=0 to compare).
#ifndef STATICGRAD_ATTN_LDMATRIX
#define STATICGRAD_ATTN_LDMATRIX 1
#endif

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

template <int Ld>
__device__ __forceinline__ void load_a(std::uint32_t (&a)[4], const __nv_bfloat16* p) {
  const int lane = threadIdx.x % 32;
#if STATICGRAD_ATTN_LDMATRIX
  // matrices: 0 rows 0-7 cols 0-7, 1 rows 8-15 cols 0-7, 2 rows 0-7 cols 8-15, 3 rows 8-15 cols 8-15
  const __nv_bfloat16* r = p + (lane % 16) * Ld + (lane / 16) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(smem_u32(r)));
#else
  const int g = lane / 4, t = lane % 4;
  a[0] = ld32(p + g * Ld + 2 * t);
  a[1] = ld32(p + (g + 8) * Ld + 2 * t);
  a[2] = ld32(p + g * Ld + 2 * t + 8);
  a[3] = ld32(p + (g + 8) * Ld + 2 * t + 8);
#endif
}

template <int Ld>
__device__ __forceinline__ void load_b(std::uint32_t (&b)[2][2], const __nv_bfloat16* p) {
  const int lane = threadIdx.x % 32;
#if STATICGRAD_ATTN_LDMATRIX
  // matrices: 0 n 0-7 k 0-7, 1 n 0-7 k 8-15, 2 n 8-15 k 0-7, 3 n 8-15 k 8-15
  const __nv_bfloat16* r = p + ((lane % 8) + (lane / 16) * 8) * Ld + ((lane / 8) % 2) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b[0][0]), "=r"(b[0][1]), "=r"(b[1][0]), "=r"(b[1][1])
               : "r"(smem_u32(r)));
#else
  const int g = lane / 4, t = lane % 4;
  for (int j = 0; j < 2; ++j) {
    const __nv_bfloat16* r = p + (j * 8 + g) * Ld + 2 * t;
    b[j][0] = ld32(r);
    b[j][1] = ld32(r + 8);
  }
#endif
}

template <int Ld>
__device__ __forceinline__ void load_b_t(std::uint32_t (&b)[2][2], const __nv_bfloat16* p) {
  const int lane = threadIdx.x % 32;
#if STATICGRAD_ATTN_LDMATRIX
  // matrices (stored [k][n], delivered transposed): 0 k 0-7 n 0-7, 1 k 8-15 n 0-7,
  // 2 k 0-7 n 8-15, 3 k 8-15 n 8-15
  const __nv_bfloat16* r = p + ((lane % 8) + ((lane / 8) % 2) * 8) * Ld + (lane / 16) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(b[0][0]), "=r"(b[0][1]), "=r"(b[1][0]), "=r"(b[1][1])
               : "r"(smem_u32(r)));
#else
  const int g = lane / 4, t = lane % 4;
  for (int j = 0; j < 2; ++j) {
    const __nv_bfloat16* c = p + (2 * t) * Ld + j * 8 + g;
    b[j][0] = pack2(c[0], c[Ld]);
    b[j][1] = pack2(c[8 * Ld], c[9 * Ld]);
  }
#endif
}

// Rows [row0, row0 + Rows) of a [*, ld_g] bf16 matrix, columns [col0, col0 + D),
// into smem [Rows][LdS]; rows >= row_end are zero-filled. All threads of the
// CTA call it; the caller commits and waits.
template <int Rows, int D, int LdS, int Threads>
__device__ __forceinline__ void load_tile(__nv_bfloat16* smem, const __nv_bfloat16* g, std::int64_t ld_g,
                                          std::int64_t row0, std::int64_t row_end, int col0) {
  constexpr int chunks_per_row = D / 8;  // 8 bf16 = 16 bytes
  constexpr int chunks = Rows * chunks_per_row;
  static_assert(chunks % Threads == 0, "load_tile: the tile must split evenly over the CTA's threads");
  for (int c = threadIdx.x; c < chunks; c += Threads) {
    const int r = c / chunks_per_row, cc = c % chunks_per_row;
    const std::int64_t row = row0 + r;
    const bool ok = row < row_end;
    const __nv_bfloat16* src = g + (ok ? row : 0) * ld_g + col0 + cc * 8;  // clamped when !ok
    cp_async16(smem + r * LdS + cc * 8, src, ok);
  }
}

// ---- the varlen grid ------------------------------------------------------------
//
// Work items are (sequence, block) pairs with blocks of Block rows aligned to
// the sequence start. Sequence s owns items first(s) .. first(s) + n(s) - 1
// with first(s) = floor(s_s / Block) + s and n(s) = ceil(L_s / Block); since
// floor(y) - floor(x) + 1 > y - x, first(s + 1) >= first(s) + n(s): the ranges
// never overlap, and floor(T / Block) + S items cover everything (a few ids
// in the gaps are idle and return at once). No host copy of seq_start and no
// precomputed list: a CTA finds its sequence by binary search, which keeps
// the launch capturable in a CUDA graph.
struct work_item {
  int seq;            // -1: idle CTA
  std::int64_t row0;  // first row of the block (global token index)
  std::int64_t begin, end;  // the sequence [begin, end)
};

template <int Block>
__device__ __forceinline__ work_item find_work(const std::int32_t* seq_start, int nseq, std::int64_t T,
                                               std::int64_t item) {
  auto first = [&](int s) -> std::int64_t { return static_cast<std::int64_t>(seq_start[s]) / Block + s; };
  int lo = 0, hi = nseq - 1;  // largest s with first(s) <= item
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first(mid) <= item) lo = mid; else hi = mid - 1;
  }
  work_item w{-1, 0, 0, 0};
  std::int64_t b = seq_start[lo], e = seq_start[lo + 1];
  b = b < 0 ? 0 : (b > T ? T : b);  // clamp: a bad layout cannot push rows out of [0, T)
  e = e < b ? b : (e > T ? T : e);
  const std::int64_t blk = item - first(lo);
  if (blk < 0 || b + blk * Block >= e) return w;
  w.seq = lo;
  w.row0 = b + blk * Block;
  w.begin = b;
  w.end = e;
  return w;
}

inline std::int64_t work_items(std::int64_t T, int nseq, int block) { return T / block + nseq; }

// ---- forward ----------------------------------------------------------------------

struct fwd_params {
  const __nv_bfloat16 *q, *k, *v;
  __nv_bfloat16* out;
  float* lse;
  const std::int32_t* seq_start;
  std::int64_t tokens;
  int nseq, heads, kv_heads;
  float scale_log2;  // scale * log2(e): scores go through exp2
};

template <class Tr>
__global__ void __launch_bounds__(Tr::threads) attention_fwd_kernel(fwd_params p) {
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, LD = Tr::ld;
  constexpr int KS = D / 16;   // k-steps over the head dim for S = Q K^T
  constexpr int NT = BN / 8;   // n8 tiles of S per warp
  constexpr int DT = D / 8;    // n8 tiles of O per warp
  // Heavy work first: the last query blocks of a sequence see the most keys.
  const std::int64_t item = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;
  const work_item w = find_work<BM>(p.seq_start, p.nseq, p.tokens, item);
  if (w.seq < 0) return;
  const int h = blockIdx.y, kvh = h / (p.heads / p.kv_heads);
  const std::int64_t ldq = static_cast<std::int64_t>(p.heads) * D, ldk = static_cast<std::int64_t>(p.kv_heads) * D;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Ks = Qs + BM * LD;
  __nv_bfloat16* Vs = Ks + BN * LD;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const std::int64_t m0 = w.row0;
  // Keys b .. min(m0 + BM, e) - 1 (causal: no key beyond the block's last query).
  const std::int64_t key_end = (m0 + BM < w.end ? m0 + BM : w.end);
  const int nkb = static_cast<int>((key_end - w.begin + BN - 1) / BN);

  load_tile<BM, D, LD, Tr::threads>(Qs, p.q, ldq, m0, w.end, h * D);
  load_tile<BN, D, LD, Tr::threads>(Ks, p.k, ldk, w.begin, w.end, kvh * D);
  cp_async_commit();

  std::uint32_t qf[KS][4];
  float o[DT][4];
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};  // rows g and g+8 (log2 domain)
  const std::int64_t qrow[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};

  for (int kb = 0; kb < nkb; ++kb) {
    const std::int64_t n0 = w.begin + static_cast<std::int64_t>(kb) * BN;
    cp_async_wait_all();
    __syncthreads();  // K[kb] (and Q) visible; every warp is done with V[kb-1]
    if (kb == 0) {
      for (int ks = 0; ks < KS; ++ks) load_a<LD>(qf[ks], Qs + warp * 16 * LD + ks * 16);
    }
    load_tile<BN, D, LD, Tr::threads>(Vs, p.v, ldk, n0, w.end, kvh * D);
    cp_async_commit();

    // S = Q K^T for this warp's 16 rows x BN keys.
    float s[NT][4];
    for (int nt = 0; nt < NT; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
    for (int nt = 0; nt < NT; nt += 2)
      for (int ks = 0; ks < KS; ++ks) {
        std::uint32_t b[2][2];
        load_b<LD>(b, Ks + nt * 8 * LD + ks * 16);  // B[k = d][n = key] = K[key][d]
        mma_bf16(s[nt], qf[ks], b[0][0], b[0][1]);
        mma_bf16(s[nt + 1], qf[ks], b[1][0], b[1][1]);
      }
    // Only the diagonal block(s) hold keys beyond some query of the block.
    const bool need_mask = n0 + BN - 1 > m0;
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
      for (int nt = 0; nt < NT; ++nt)
        for (int c = 0; c < 2; ++c) {
          float x = s[nt][2 * r + c] * p.scale_log2;
          if (need_mask && n0 + nt * 8 + 2 * t + c > qrow[r]) x = -INFINITY;
          s[nt][2 * r + c] = x;
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // the 4 lanes of a quad share the row
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(mrow[r], mx);
      // Key b is visible to every row in block 0, so m_new is finite from then
      // on; the guard keeps exp2(-inf - -inf) = NaN impossible regardless.
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = exp2f(mrow[r] - m_use);  // 0 on the first block (mrow = -inf)
      mrow[r] = m_new;
      float sum = 0.f;
      for (int nt = 0; nt < NT; ++nt)
        for (int c = 0; c < 2; ++c) {
          const float e = exp2f(s[nt][2 * r + c] - m_use);  // masked: exp2(-inf) = 0
          s[nt][2 * r + c] = e;
          sum += e;
        }
      lrow[r] = lrow[r] * alpha + sum;  // per-lane partial; the quad is reduced at the end
      for (int dt = 0; dt < DT; ++dt) {
        o[dt][2 * r] *= alpha;
        o[dt][2 * r + 1] *= alpha;
      }
    }

    cp_async_wait_all();
    __syncthreads();  // V[kb] visible; every warp is done with K[kb]
    if (kb + 1 < nkb) {
      load_tile<BN, D, LD, Tr::threads>(Ks, p.k, ldk, n0 + BN, w.end, kvh * D);
      cp_async_commit();
    }
    // O += P V: the S accumulators of n8 tiles 2kk, 2kk+1 are exactly the A
    // fragment of k-step kk (rows g / g+8, keys 2t.. / 2t+8..).
    for (int kk = 0; kk < BN / 16; ++kk) {
      const std::uint32_t a[4] = {pack_f2(s[2 * kk][0], s[2 * kk][1]), pack_f2(s[2 * kk][2], s[2 * kk][3]),
                                  pack_f2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_f2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      for (int dt = 0; dt < DT; dt += 2) {
        std::uint32_t b[2][2];
        load_b_t<LD>(b, Vs + kk * 16 * LD + dt * 8);  // B[k = key][n = d] = V[key][d]
        mma_bf16(o[dt], a, b[0][0], b[0][1]);
        mma_bf16(o[dt + 1], a, b[1][0], b[1][1]);
      }
    }
  }

  // Epilogue: normalise, write out (bf16) and lse (natural log) for rows < e.
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = 1.f / l;  // l >= 1: the max term contributes exp2(0)
    const std::int64_t row = qrow[r];
    if (row < w.end) {
      __nv_bfloat16* orow = p.out + row * ldq + h * D + 2 * t;
      for (int dt = 0; dt < DT; ++dt)
        *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8) =
            __floats2bfloat162_rn(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
      if (t == 0) p.lse[row * p.heads + h] = (mrow[r] + log2f(l)) * ln2;
    }
  }
}

// ---- backward ---------------------------------------------------------------------

struct bwd_params {
  const __nv_bfloat16 *q, *k, *v, *out, *dout;
  const float* lse;
  float* dvec;  // [T, H] D_i = rowsum(dout_i * out_i), written by attention_dot_kernel
  __nv_bfloat16 *dq, *dk, *dv;
  const std::int32_t* seq_start;
  std::int64_t tokens;
  int nseq, heads, kv_heads;
  float scale, scale_log2;
};

// D_i for every (token, head): one warp per row of D elements, f32 sums.
template <int D>
__global__ void __launch_bounds__(256) attention_dot_kernel(bwd_params p) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;  // (token, head)
  const int lane = threadIdx.x % 32;
  if (row >= p.tokens * p.heads) return;
  const __nv_bfloat16* o = p.out + row * D;  // [T, H*D] rows of D are contiguous per (token, head)
  const __nv_bfloat16* d = p.dout + row * D;
  float acc = 0.f;
  for (int i = 2 * lane; i < D; i += 64) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(o + i));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(d + i));
    acc += a.x * b.x + a.y * b.y;
  }
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) p.dvec[row] = acc;
}

// dq: rows = queries of one head, loop over key blocks b .. diagonal.
template <class Tr>
__global__ void __launch_bounds__(Tr::threads) attention_dq_kernel(bwd_params p) {
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, LD = Tr::ld;
  constexpr int KS = D / 16, NT = BN / 8, DT = D / 8;
  const std::int64_t item = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;
  const work_item w = find_work<BM>(p.seq_start, p.nseq, p.tokens, item);
  if (w.seq < 0) return;
  const int h = blockIdx.y, kvh = h / (p.heads / p.kv_heads);
  const std::int64_t ldq = static_cast<std::int64_t>(p.heads) * D, ldk = static_cast<std::int64_t>(p.kv_heads) * D;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* dOs = Qs + BM * LD;
  __nv_bfloat16* Ks0 = dOs + BM * LD;  // [2][BN][LD]: buffer kb % 2
  __nv_bfloat16* Vs0 = Ks0 + 2 * BN * LD;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const std::int64_t m0 = w.row0;
  const std::int64_t key_end = (m0 + BM < w.end ? m0 + BM : w.end);
  const int nkb = static_cast<int>((key_end - w.begin + BN - 1) / BN);
  const std::int64_t qrow[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};
  float lse2[2], dD[2];
  for (int r = 0; r < 2; ++r) {
    const bool ok = qrow[r] < w.end;  // rows past the sequence: finite placeholders, never stored
    lse2[r] = ok ? p.lse[qrow[r] * p.heads + h] * log2e : 0.f;
    dD[r] = ok ? p.dvec[qrow[r] * p.heads + h] : 0.f;
  }

  load_tile<BM, D, LD, Tr::threads>(Qs, p.q, ldq, m0, w.end, h * D);
  load_tile<BM, D, LD, Tr::threads>(dOs, p.dout, ldq, m0, w.end, h * D);
  load_tile<BN, D, LD, Tr::threads>(Ks0, p.k, ldk, w.begin, w.end, kvh * D);
  load_tile<BN, D, LD, Tr::threads>(Vs0, p.v, ldk, w.begin, w.end, kvh * D);
  cp_async_commit();

  float dq[DT][4];
  for (int i = 0; i < DT; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  const __nv_bfloat16* qw = Qs + warp * 16 * LD;
  const __nv_bfloat16* dow = dOs + warp * 16 * LD;

  for (int kb = 0; kb < nkb; ++kb) {
    const std::int64_t n0 = w.begin + static_cast<std::int64_t>(kb) * BN;
    cp_async_wait_all();
    __syncthreads();  // K, V[kb] (and Q, dO) visible; every warp is done with buffer (kb + 1) % 2
    if (kb + 1 < nkb) {  // copy the next key block while this one is used
      const int nb = (kb + 1) % 2;
      load_tile<BN, D, LD, Tr::threads>(Ks0 + nb * BN * LD, p.k, ldk, n0 + BN, w.end, kvh * D);
      load_tile<BN, D, LD, Tr::threads>(Vs0 + nb * BN * LD, p.v, ldk, n0 + BN, w.end, kvh * D);
      cp_async_commit();
    }
    const __nv_bfloat16* Ks = Ks0 + (kb % 2) * BN * LD;
    const __nv_bfloat16* Vs = Vs0 + (kb % 2) * BN * LD;

    float s[NT][4], dp[NT][4];
    for (int nt = 0; nt < NT; ++nt)
      for (int c = 0; c < 4; ++c) s[nt][c] = dp[nt][c] = 0.f;
    for (int ks = 0; ks < KS; ++ks) {
      std::uint32_t a[4], ad[4];
      load_a<LD>(a, qw + ks * 16);
      load_a<LD>(ad, dow + ks * 16);
      for (int nt = 0; nt < NT; nt += 2) {
        std::uint32_t b[2][2];
        load_b<LD>(b, Ks + nt * 8 * LD + ks * 16);  // S = Q K^T
        mma_bf16(s[nt], a, b[0][0], b[0][1]);
        mma_bf16(s[nt + 1], a, b[1][0], b[1][1]);
        load_b<LD>(b, Vs + nt * 8 * LD + ks * 16);  // dP = dO V^T
        mma_bf16(dp[nt], ad, b[0][0], b[0][1]);
        mma_bf16(dp[nt + 1], ad, b[1][0], b[1][1]);
      }
    }
    const bool need_mask = n0 + BN - 1 > m0;
    // dS = P (dP - D); P = exp2(S scale log2e - lse log2e) recomputed, 0 where masked.
    for (int nt = 0; nt < NT; ++nt)
      for (int c = 0; c < 4; ++c) {
        const int r = c / 2;
        const bool masked = need_mask && n0 + nt * 8 + 2 * t + (c % 2) > qrow[r];
        const float pr = masked ? 0.f : exp2f(s[nt][c] * p.scale_log2 - lse2[r]);
        s[nt][c] = pr * (dp[nt][c] - dD[r]);
      }
    // dQ += dS K: A = dS from the accumulators, B[k = key][n = d] = K[key][d].
    for (int kk = 0; kk < BN / 16; ++kk) {
      const std::uint32_t a[4] = {pack_f2(s[2 * kk][0], s[2 * kk][1]), pack_f2(s[2 * kk][2], s[2 * kk][3]),
                                  pack_f2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_f2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      for (int dt = 0; dt < DT; dt += 2) {
        std::uint32_t b[2][2];
        load_b_t<LD>(b, Ks + kk * 16 * LD + dt * 8);  // B[k = key][n = d] = K[key][d]
        mma_bf16(dq[dt], a, b[0][0], b[0][1]);
        mma_bf16(dq[dt + 1], a, b[1][0], b[1][1]);
      }
    }
  }
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = qrow[r];
    if (row >= w.end) continue;
    __nv_bfloat16* dst = p.dq + row * ldq + h * D + 2 * t;
    for (int dt = 0; dt < DT; ++dt)
      *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8) =
          __floats2bfloat162_rn(dq[dt][2 * r] * p.scale, dq[dt][2 * r + 1] * p.scale);
  }
}

// dk, dv: rows = keys of one KV head; loop over the group's query heads and the
// query blocks from the diagonal to the end of the sequence.
template <class Tr>
__global__ void __launch_bounds__(Tr::threads) attention_dkdv_kernel(bwd_params p) {
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, LD = Tr::ld;
  constexpr int KS = D / 16, MT = BM / 8, DT = D / 8;
  // Heavy work first needs no reversal here: the FIRST key blocks of a
  // sequence see the most queries.
  const work_item w = find_work<BN>(p.seq_start, p.nseq, p.tokens, blockIdx.x);
  if (w.seq < 0) return;
  const int kvh = blockIdx.y, group = p.heads / p.kv_heads;
  const std::int64_t ldq = static_cast<std::int64_t>(p.heads) * D, ldk = static_cast<std::int64_t>(p.kv_heads) * D;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* Vs = Ks + BN * LD;
  // Two stages of {Q [BM][LD], dO [BM][LD], lse * log2e [BM], D [BM]}.
  constexpr int stage_bytes = 2 * BM * LD * 2 + 2 * BM * 4;
  static_assert(stage_bytes % 16 == 0, "each stage must start 16-byte aligned for cp.async");
  unsigned char* stage0 = reinterpret_cast<unsigned char*>(Vs + BN * LD);
  auto stage_q = [&](int st) { return reinterpret_cast<__nv_bfloat16*>(stage0 + st * stage_bytes); };
  auto stage_do = [&](int st) { return stage_q(st) + BM * LD; };
  auto stage_lse = [&](int st) { return reinterpret_cast<float*>(stage_do(st) + BM * LD); };
  auto stage_d = [&](int st) { return stage_lse(st) + BM; };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const std::int64_t n0 = w.row0;
  const std::int64_t krow[2] = {n0 + warp * 16 + g, n0 + warp * 16 + g + 8};

  // Queries n0 .. e-1 see this key block; blocks of BM aligned to the sequence
  // start (n0 - b is a multiple of BN, hence of BM). Iteration it is query
  // head kvh * group + it / nqb, query block it % nqb.
  const int nqb = static_cast<int>((w.end - n0 + BM - 1) / BM);
  const int iters = group * nqb;
  // Copies of iteration `it` into stage it % 2: Q and dO by cp.async, lse
  // and D by plain loads (strided by H, 2 x BM floats).
  auto issue = [&](int it) {
    const int st = it % 2, h = kvh * group + it / nqb;
    const std::int64_t m0 = n0 + static_cast<std::int64_t>(it % nqb) * BM;
    load_tile<BM, D, LD, Tr::threads>(stage_q(st), p.q, ldq, m0, w.end, h * D);
    load_tile<BM, D, LD, Tr::threads>(stage_do(st), p.dout, ldq, m0, w.end, h * D);
    for (int i = threadIdx.x; i < BM; i += Tr::threads) {
      const std::int64_t row = m0 + i;
      const bool ok = row < w.end;  // past the sequence: finite placeholders, masked below
      stage_lse(st)[i] = ok ? p.lse[row * p.heads + h] * log2e : 0.f;
      stage_d(st)[i] = ok ? p.dvec[row * p.heads + h] : 0.f;
    }
  };

  load_tile<BN, D, LD, Tr::threads>(Ks, p.k, ldk, n0, w.end, kvh * D);
  load_tile<BN, D, LD, Tr::threads>(Vs, p.v, ldk, n0, w.end, kvh * D);
  issue(0);
  cp_async_commit();

  float dk[DT][4], dv[DT][4];
  for (int i = 0; i < DT; ++i)
    for (int c = 0; c < 4; ++c) dk[i][c] = dv[i][c] = 0.f;
  const __nv_bfloat16* kw = Ks + warp * 16 * LD;
  const __nv_bfloat16* vw = Vs + warp * 16 * LD;

  for (int it = 0; it < iters; ++it) {
    {
      const std::int64_t m0 = n0 + static_cast<std::int64_t>(it % nqb) * BM;
      cp_async_wait_all();
      // Stage it % 2 (and K, V) visible to all; every warp is done with
      // iteration it - 1, so stage (it + 1) % 2 may be overwritten.
      __syncthreads();
      if (it + 1 < iters) {
        issue(it + 1);
        cp_async_commit();
      }
      const __nv_bfloat16* Qs = stage_q(it % 2);
      const __nv_bfloat16* dOs = stage_do(it % 2);
      const float* lse_s = stage_lse(it % 2);
      const float* dD_s = stage_d(it % 2);

      // S^T = K Q^T and dP^T = V dO^T: rows = this warp's 16 keys, cols = BM queries.
      float s[MT][4], dp[MT][4];
      for (int mt = 0; mt < MT; ++mt)
        for (int c = 0; c < 4; ++c) s[mt][c] = dp[mt][c] = 0.f;
      for (int ks = 0; ks < KS; ++ks) {
        std::uint32_t a[4], av[4];
        load_a<LD>(a, kw + ks * 16);
        load_a<LD>(av, vw + ks * 16);
        for (int mt = 0; mt < MT; mt += 2) {
          std::uint32_t b[2][2];
          load_b<LD>(b, Qs + mt * 8 * LD + ks * 16);  // B[k = d][n = query] = Q[query][d]
          mma_bf16(s[mt], a, b[0][0], b[0][1]);
          mma_bf16(s[mt + 1], a, b[1][0], b[1][1]);
          load_b<LD>(b, dOs + mt * 8 * LD + ks * 16);  // B[k = d][n = query] = dO[query][d]
          mma_bf16(dp[mt], av, b[0][0], b[0][1]);
          mma_bf16(dp[mt + 1], av, b[1][0], b[1][1]);
        }
      }
      // Valid (key j, query i): j <= i and i < e. Masking is needed on the
      // diagonal blocks and on the sequence's last query block.
      const bool need_mask = m0 < n0 + BN - 1 || m0 + BM > w.end;
      for (int mt = 0; mt < MT; ++mt)
        for (int c = 0; c < 4; ++c) {
          const int col = mt * 8 + 2 * t + (c % 2);
          const std::int64_t qi = m0 + col;
          const bool masked = need_mask && (krow[c / 2] > qi || qi >= w.end);
          const float pr = masked ? 0.f : exp2f(s[mt][c] * p.scale_log2 - lse_s[col]);
          s[mt][c] = pr;                          // P^T
          dp[mt][c] = pr * (dp[mt][c] - dD_s[col]);  // dS^T (unscaled)
        }
      // dV += P^T dO and dK += dS^T Q: A from the accumulators (k = queries),
      // B[k = query][n = d] = dO[query][d] / Q[query][d].
      for (int kk = 0; kk < BM / 16; ++kk) {
        const std::uint32_t ap[4] = {pack_f2(s[2 * kk][0], s[2 * kk][1]), pack_f2(s[2 * kk][2], s[2 * kk][3]),
                                     pack_f2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                     pack_f2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
        const std::uint32_t as[4] = {pack_f2(dp[2 * kk][0], dp[2 * kk][1]), pack_f2(dp[2 * kk][2], dp[2 * kk][3]),
                                     pack_f2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                                     pack_f2(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
        for (int dt = 0; dt < DT; dt += 2) {
          std::uint32_t b[2][2];
          load_b_t<LD>(b, dOs + kk * 16 * LD + dt * 8);  // B[k = query][n = d] = dO[query][d]
          mma_bf16(dv[dt], ap, b[0][0], b[0][1]);
          mma_bf16(dv[dt + 1], ap, b[1][0], b[1][1]);
          load_b_t<LD>(b, Qs + kk * 16 * LD + dt * 8);  // B[k = query][n = d] = Q[query][d]
          mma_bf16(dk[dt], as, b[0][0], b[0][1]);
          mma_bf16(dk[dt + 1], as, b[1][0], b[1][1]);
        }
      }
    }
  }
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = krow[r];
    if (row >= w.end) continue;
    __nv_bfloat16* dkr = p.dk + row * ldk + kvh * D + 2 * t;
    __nv_bfloat16* dvr = p.dv + row * ldk + kvh * D + 2 * t;
    for (int dt = 0; dt < DT; ++dt) {
      *reinterpret_cast<__nv_bfloat162*>(dkr + dt * 8) =
          __floats2bfloat162_rn(dk[dt][2 * r] * p.scale, dk[dt][2 * r + 1] * p.scale);
      *reinterpret_cast<__nv_bfloat162*>(dvr + dt * 8) = __floats2bfloat162_rn(dv[dt][2 * r], dv[dt][2 * r + 1]);
    }
  }
}

// ---- host side ----------------------------------------------------------------------

// bf16 tensors: 16-byte aligned (cp.async copies 16 bytes; row strides are
// multiples of 16 bytes because D is). f32 / int32 arrays: 4-byte aligned.
inline void check_args(std::int64_t tokens, int nseq, int heads, int kv_heads, int head_dim,
                       std::initializer_list<const void*> bf16_ptrs, std::initializer_list<const void*> word_ptrs) {
  const error_context ctx{"", "cuda attention", std::nullopt};
  require(head_dim == 64 || head_dim == 128,
          "head_dim " + std::to_string(head_dim) + " has no CUDA attention kernel (64 and 128 are built)", ctx);
  require(heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
          "heads (" + std::to_string(heads) + ") must be a positive multiple of kv_heads (" +
              std::to_string(kv_heads) + ")",
          ctx);
  require(heads <= 65535 && kv_heads <= 65535, "heads go on grid.y: at most 65535", ctx);
  require(tokens >= 0 && tokens < (std::int64_t{1} << 31), "tokens must be in [0, 2^31)", ctx);
  require(nseq >= 1, "at least one sequence (seq_start has S + 1 >= 2 entries)", ctx);
  require(tokens * heads / 8 < (std::int64_t{1} << 31),
          "tokens * heads must be below 2^34 (the row-dot kernel's grid.x is tokens * heads / 8)", ctx);
  for (const void* ptr : bf16_ptrs)
    require(ptr != nullptr && reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0,
            "every bf16 tensor pointer must be non-null and 16-byte aligned (cp.async copies 16 bytes)", ctx);
  for (const void* ptr : word_ptrs)
    require(ptr != nullptr && reinterpret_cast<std::uintptr_t>(ptr) % 4 == 0,
            "lse, seq_start and workspace must be non-null and 4-byte aligned", ctx);
}

template <class Kernel>
void set_smem(Kernel kernel, int bytes) {
  // Above 48 KiB dynamic shared memory needs an opt-in per kernel.
  SG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <int D>
void forward_impl(const fwd_params& p, cudaStream_t stream) {
  using Tr = attention_fwd_traits<D>;
  const auto kernel = attention_fwd_kernel<Tr>;
  set_smem(kernel, Tr::smem_bytes);
  const dim3 grid(static_cast<unsigned>(work_items(p.tokens, p.nseq, Tr::block_m)), static_cast<unsigned>(p.heads));
  kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(p);
  SG_CUDA_CHECK(cudaGetLastError());
}

template <int D>
void backward_impl(const bwd_params& p, cudaStream_t stream, bool hopper_kernels) {
  const std::int64_t rows = p.tokens * p.heads;
  attention_dot_kernel<D><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p);
  SG_CUDA_CHECK(cudaGetLastError());
  if (hopper_kernels) {
    const hopper::bwd_sm90_params hp{p.dq,   p.dk,       p.dv,    p.lse,    p.dvec,  p.seq_start,
                                     p.tokens, p.nseq,   p.heads, p.kv_heads, p.scale, p.scale_log2};
    hopper::attention_backward_sm90<D>(p.q, p.k, p.v, p.dout, hp, stream);
    return;
  }
  {
    using Tr = attention_dkdv_traits<D>;
    const auto kernel = attention_dkdv_kernel<Tr>;
    set_smem(kernel, Tr::smem_bytes);
    const dim3 grid(static_cast<unsigned>(work_items(p.tokens, p.nseq, Tr::block_n)),
                    static_cast<unsigned>(p.kv_heads));
    kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(p);
    SG_CUDA_CHECK(cudaGetLastError());
  }
  {
    using Tr = attention_dq_traits<D>;
    const auto kernel = attention_dq_kernel<Tr>;
    set_smem(kernel, Tr::smem_bytes);
    const dim3 grid(static_cast<unsigned>(work_items(p.tokens, p.nseq, Tr::block_m)), static_cast<unsigned>(p.heads));
    kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(p);
    SG_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace attn_detail

// Which kernels run. On compute capability 9.0: `hopper` = the wgmma + TMA
// kernels (hopper/attention_{fwd,bwd}_sm90.cuh; the forward software
// pipelined with ping-pong consumers), `hopper_unpipelined` = the same with
// the plain forward loop, `portable` = the mma.sync kernels (also what every
// choice falls back to on other devices). `fastest`, the default the
// executors use, is the fastest choice that has passed test_attention on the
// H200 (flags below; docs/cuda.md "Attention on Hopper" has the numbers).
// Tests and benchmarks name each choice.
enum class attention_kernel { fastest, hopper, hopper_unpipelined, portable };
// What `fastest` is on sm_90, from the H200 runs of bench_attention and
// test_attention (2026-12-02, every kernel passing): the pipelined forward for
// both head dims (d128 8x2048: 366 TFLOP/s pipelined, 308 unpipelined, 179
// portable; d64: 242 / 188 / 182); the Hopper backward for head dim 128 only
// (d128: 157 against the portable 127; d64: 91 against 121).
inline constexpr bool kAttentionFastestPipelined = true;
constexpr bool attention_fastest_hopper_backward(int head_dim) { return head_dim == 128; }

// What `fastest` resolves to for the whole process: `fastest` (the choice
// above) unless STATICGRAD_ATTENTION=hopper|hopper_unpipelined|portable says
// otherwise (read once), or a program sets it (tests: the same model step on
// two kernels, one as the other's baseline).
inline attention_kernel& attention_kernel_override() {
  static attention_kernel k = [] {
    const char* e = std::getenv("STATICGRAD_ATTENTION");
    const std::string v = e ? e : "fastest";
    if (v == "fastest") return attention_kernel::fastest;
    if (v == "hopper") return attention_kernel::hopper;
    if (v == "hopper_unpipelined") return attention_kernel::hopper_unpipelined;
    if (v == "portable") return attention_kernel::portable;
    throw error("STATICGRAD_ATTENTION is '" + v + "'; expected fastest, hopper, hopper_unpipelined or portable",
                {"", "STATICGRAD_ATTENTION", {}});
  }();
  return k;
}
inline attention_kernel attention_kernel_from_env() { return attention_kernel_override(); }

// Forward: out [T, H*D] bf16 and lse [T, H] f32 from q [T, H*D], k, v [T, KV*D].
// seq_start: device int32 [nseq + 1]. Asynchronous on `stream`.
inline void attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                              __nv_bfloat16* out, float* lse, const std::int32_t* seq_start, std::int64_t tokens,
                              int nseq, int heads, int kv_heads, int head_dim, cudaStream_t stream = nullptr,
                              attention_kernel which = attention_kernel::fastest) {
  attn_detail::check_args(tokens, nseq, heads, kv_heads, head_dim, {q, k, v, out}, {lse, seq_start});
  if (tokens == 0) return;
  if (which == attention_kernel::fastest) which = attention_kernel_from_env();
  const float scale_log2 = attn_detail::log2e / std::sqrt(static_cast<float>(head_dim));
  if (which != attention_kernel::portable && hopper::device_is_sm90()) {
    const hopper::fwd_sm90_params hp{out, lse, seq_start, tokens, nseq, heads, kv_heads, scale_log2};
    const bool pipelined =
        which == attention_kernel::hopper || (which == attention_kernel::fastest && kAttentionFastestPipelined);
    if (head_dim == 64) hopper::attention_forward_sm90<64>(q, k, v, hp, stream, pipelined);
    else hopper::attention_forward_sm90<128>(q, k, v, hp, stream, pipelined);
    return;
  }
  attn_detail::fwd_params p{q, k, v, out, lse, seq_start, tokens, nseq, heads, kv_heads, scale_log2};
  if (head_dim == 64) attn_detail::forward_impl<64>(p, stream);
  else attn_detail::forward_impl<128>(p, stream);
}

// Bytes of f32 workspace attention_backward needs: D_i per (token, head).
inline std::size_t attention_backward_workspace_bytes(std::int64_t tokens, int heads) {
  return static_cast<std::size_t>(tokens) * static_cast<std::size_t>(heads) * sizeof(float);
}

// Backward: dq [T, H*D], dk, dv [T, KV*D] (bf16, overwritten) from the forward's
// inputs, out, lse and dout. `workspace`: attention_backward_workspace_bytes.
// Three kernels on `stream`: D = rowsum(dout * out), dk/dv, dq. Deterministic.
inline void attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                               const __nv_bfloat16* out, const float* lse, const __nv_bfloat16* dout,
                               __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                               const std::int32_t* seq_start, std::int64_t tokens, int nseq, int heads,
                               int kv_heads, int head_dim, float* workspace, cudaStream_t stream = nullptr,
                               attention_kernel which = attention_kernel::fastest) {
  attn_detail::check_args(tokens, nseq, heads, kv_heads, head_dim,
                          {q, k, v, out, dout, dq, dk, dv},
                          {lse, seq_start, workspace});
  if (tokens == 0) return;
  if (which == attention_kernel::fastest) which = attention_kernel_from_env();
  const float scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  attn_detail::bwd_params p{q,  k,  v,         out,   dout,  lse,      workspace, dq,
                            dk, dv, seq_start, tokens, nseq, heads,    kv_heads,  scale,
                            scale * attn_detail::log2e};
  const bool hopper_kernels =
      (which == attention_kernel::hopper || which == attention_kernel::hopper_unpipelined ||
       (which == attention_kernel::fastest && attention_fastest_hopper_backward(head_dim))) &&
      hopper::device_is_sm90();
  if (head_dim == 64) attn_detail::backward_impl<64>(p, stream, hopper_kernels);
  else attn_detail::backward_impl<128>(p, stream, hopper_kernels);
}

// ---- where the kernels are compiled --------------------------------------------------
// The host functions that launch the kernels of head dim D, as explicit
// instantiations: PREFIX `extern` declares them, PREFIX empty defines them.
// Header-only use (no STATICGRAD_CUDA_PRECOMPILED_KERNELS) instantiates them
// implicitly in every translation unit that calls attention_forward/backward.
// The project's own build defines the macro for every target linking
// staticgrad_cuda_kernels (src/cuda/CMakeLists.txt), which compiles each head
// dim once (src/cuda/attention_kernels.cu.in): these kernels are most of the
// device code of a model step, and compiling them in every plan's translation
// unit made each one take over a minute.
#define STATICGRAD_ATTENTION_INSTANTIATE(PREFIX, D)                                                              \
  PREFIX template void attn_detail::forward_impl<D>(const attn_detail::fwd_params&, cudaStream_t);             \
  PREFIX template void attn_detail::backward_impl<D>(const attn_detail::bwd_params&, cudaStream_t, bool);      \
  PREFIX template void hopper::attention_forward_sm90<D>(const __nv_bfloat16*, const __nv_bfloat16*,           \
                                                         const __nv_bfloat16*, const hopper::fwd_sm90_params&, \
                                                         cudaStream_t, bool);                                  \
  PREFIX template void hopper::attention_backward_sm90<D>(const __nv_bfloat16*, const __nv_bfloat16*,          \
                                                          const __nv_bfloat16*, const __nv_bfloat16*,          \
                                                          const hopper::bwd_sm90_params&, cudaStream_t);
#ifdef STATICGRAD_CUDA_PRECOMPILED_KERNELS
STATICGRAD_ATTENTION_INSTANTIATE(extern, 64)
STATICGRAD_ATTENTION_INSTANTIATE(extern, 128)
#endif

}  // namespace staticgrad::cuda
