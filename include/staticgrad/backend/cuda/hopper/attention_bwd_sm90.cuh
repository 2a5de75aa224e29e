#pragma once
// Causal GQA flash-attention backward on Hopper tensor cores (sm_90a): wgmma,
// TMA and warp specialisation; the same contract and the same deterministic
// split as the mma.sync backward in ../attention.cuh, which calls these on
// compute capability 9.0 after its row-dot kernel (D_i = rowsum(dO_i * O_i)):
//
//  - dk/dv: one CTA per (sequence, 128-key block, KV head). Two consumer warp
//    groups own 64 keys each and loop over the group's query heads and the
//    64-query blocks from the diagonal on:
//        S^T = K Q^T, dP^T = V dO^T          (wgmma m64n64k16, all from smem)
//        P^T = exp2(S^T scale log2e - lse log2e), dS^T = P^T (dP^T - D)
//        dV += P^T dO, dK += dS^T Q          (wgmma m64nDk16, A = P^T / dS^T
//                                             from registers, B = dO / Q
//                                             read N-major from smem)
//    The producer warp group streams (Q, dO) tiles by TMA through a ring of
//    3 stages; 64 of its threads copy the tile's lse and D (strided by H in
//    memory) into the same stage and arrive on its barrier.
//  - dq: one CTA per (sequence, 128-query block, head), the forward's shape:
//    two consumer warp groups of 64 queries loop over 64-key blocks:
//        S = Q K^T, dP = dO V^T, dS = P (dP - D), dQ += dS K.
//    Q and dO are loaded once; K, V stream through 3 stages.
// dK, dV, dQ accumulate in f32 registers and are written once as bf16: no
// atomics, bitwise deterministic. Registers per consumer thread: dk/dv
// 2 x D/2 + S^T, dP^T 2 x 32 (+ bf16 fragments); dq D/2 + 2 x 32.
// Rows past a sequence's end come from the TMA unmasked (the next sequence,
// or zeros past T): keys past the end are masked for every valid query,
// queries past the end are masked in dk/dv (P^T = 0) and never stored.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/hopper/attention_fwd_sm90.cuh"
#include "staticgrad/backend/cuda/hopper/sm90.cuh"

namespace staticgrad::cuda::hopper {

struct bwd_sm90_params {
  __nv_bfloat16 *dq, *dk, *dv;
  const float* lse;   // [T, H] natural log
  const float* dvec;  // [T, H] D_i
  const std::int32_t* seq_start;
  std::int64_t tokens;
  int nseq, heads, kv_heads;
  float scale, scale_log2;
};

template <int HeadDim>
struct attention_dkdv_sm90_traits {
  static_assert(HeadDim == 64 || HeadDim == 128, "the Hopper attention backward is built for head_dim 64 and 128");
  static constexpr int head_dim = HeadDim;
  static constexpr int consumers = 2;
  static constexpr int threads = 128 * (1 + consumers);
  static constexpr int block_n = 64 * consumers;  // keys per CTA
  static constexpr int block_m = 64;              // queries per step
  static_assert(block_n % block_m == 0, "query blocks must start exactly on the key block's diagonal");
  static constexpr int stages = 3;
  static constexpr int panels = HeadDim / 64;
  static constexpr int kv_bytes = block_n * HeadDim * 2;  // K (or V) of the CTA
  static constexpr int tile_bytes = block_m * HeadDim * 2;  // one Q (or dO) tile
  static constexpr int vec_bytes = 2 * block_m * 4;         // lse * log2e and D of one tile
  static constexpr int stage_bytes = 2 * tile_bytes;  // Q and dO panels; lse and D live after all stages
  static_assert(stage_bytes % 1024 == 0, "each stage's panels must stay 1024-byte aligned");
  static constexpr int tiles_bytes = 2 * kv_bytes + stages * (stage_bytes + vec_bytes);
  static constexpr int barrier_bytes = 8 * (1 + 2 * stages);  // kv_full, full[], empty[]
  static constexpr int smem_bytes = 1024 + tiles_bytes + barrier_bytes;
  static_assert(smem_bytes <= 227 * 1024, "the stages must fit in one SM's 227 KiB of shared memory");
  static constexpr int loaders = block_m;  // producer threads copying lse and D
  // 24 + 2 x 240 = 3 x 168, the whole pool (32 here was the device hang: see
  // launch_regs in sm90.cuh). ptxas fits the producer's code into 24 or fails.
  static constexpr int producer_regs = 24, consumer_regs = 240;
  static_assert(fits_register_pool(threads, producer_regs, consumers, consumer_regs),
                "the warp groups' setmaxnreg split must fit the CTA's register pool (threads x launch_regs), "
                "or the consumers' setmaxnreg.inc waits forever");
};

template <int HeadDim>
struct attention_dq_sm90_traits {
  static_assert(HeadDim == 64 || HeadDim == 128, "the Hopper attention backward is built for head_dim 64 and 128");
  static constexpr int head_dim = HeadDim;
  static constexpr int consumers = 2;
  static constexpr int threads = 128 * (1 + consumers);
  static constexpr int block_m = 64 * consumers;  // queries per CTA
  static constexpr int block_n = 64;              // keys per step
  static constexpr int stages = 3;
  static constexpr int panels = HeadDim / 64;
  static constexpr int q_bytes = block_m * HeadDim * 2;   // Q (or dO) of the CTA
  static constexpr int kv_bytes = block_n * HeadDim * 2;  // one K (or V) stage
  static constexpr int tiles_bytes = 2 * q_bytes + 2 * stages * kv_bytes;
  static constexpr int barrier_bytes = 8 * (1 + 3 * stages);  // q_full, k_full[], v_full[], empty[]
  static constexpr int smem_bytes = 1024 + tiles_bytes + barrier_bytes;
  static_assert(smem_bytes <= 227 * 1024, "the stages must fit in one SM's 227 KiB of shared memory");
  static constexpr int producer_regs = 24, consumer_regs = 240;
  static_assert(fits_register_pool(threads, producer_regs, consumers, consumer_regs),
                "the warp groups' setmaxnreg split must fit the CTA's register pool (threads x launch_regs), "
                "or the consumers' setmaxnreg.inc waits forever");
};

// ---- dk / dv -------------------------------------------------------------------------

template <class Tr>
__global__ void __launch_bounds__(Tr::threads, 1)
    attention_dkdv_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                               const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap do_map,
                               bwd_sm90_params p) {
#if STATICGRAD_SM90A
  using namespace fwd_detail;
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, ST = Tr::stages, PN = Tr::panels;
  constexpr int S_N = BM / 8 * 4;  // S^T accumulators per thread (m64n64: 32)
  constexpr int O_N = D / 8 * 4;   // dK, dV accumulators per thread
  constexpr float log2e = 1.4426950408889634f;

  const work w = find<BN>(p.seq_start, p.nseq, p.tokens, blockIdx.x);
  if (w.seq < 0) return;
  const int kvh = blockIdx.y, group = p.heads / p.kv_heads;
  const std::int64_t n0 = w.row0;
  const int nqb = static_cast<int>((w.end - n0 + BM - 1) / BM);  // query blocks n0, n0 + BM, .. < end
  const int iters = group * nqb;

  extern __shared__ unsigned char smem_raw[];
  unsigned char* const base_ptr =
      smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);  // panels are 1024-byte aligned
  const std::uint32_t base = smem_u32(base_ptr);
  const std::uint32_t k_s = base, v_s = base + Tr::kv_bytes;
  auto stage = [&](int s) { return 2u * Tr::kv_bytes + static_cast<std::uint32_t>(s) * Tr::stage_bytes; };
  auto q_s = [&](int s) { return base + stage(s); };
  auto do_s = [&](int s) { return base + stage(s) + Tr::tile_bytes; };
  auto lse_p = [&](int s) {
    return reinterpret_cast<float*>(base_ptr + 2 * Tr::kv_bytes + ST * Tr::stage_bytes + s * Tr::vec_bytes);
  };
  auto dvec_p = [&](int s) { return lse_p(s) + BM; };
  const std::uint32_t bars = base + Tr::tiles_bytes;
  const std::uint32_t kv_full = bars;
  auto full = [&](int s) { return bars + 8u * (1 + s); };
  auto empty = [&](int s) { return bars + 8u * (1 + ST + s); };

  if (threadIdx.x == 0) {
    mbar_init(kv_full, 1);
    for (int s = 0; s < ST; ++s) {
      mbar_init(full(s), 1 + Tr::loaders);  // the TMA thread's expect_tx + the lse / D copiers
      mbar_init(empty(s), 128 * Tr::consumers);
    }
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    // ---- producer: thread 0 issues the TMA, threads 64..127 copy lse and D ----
    regs_release<Tr::producer_regs>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(&q_map);
      tma_prefetch_map(&do_map);
      mbar_arrive_expect_tx(kv_full, 2 * Tr::kv_bytes);
      for (int pn = 0; pn < PN; ++pn) {
        tma_load_2d(k_s + pn * BN * 128, &k_map, kv_full, kvh * D + 64 * pn, static_cast<int>(n0));
        tma_load_2d(v_s + pn * BN * 128, &v_map, kv_full, kvh * D + 64 * pn, static_cast<int>(n0));
      }
      for (int it = 0; it < iters; ++it) {
        const int s = it % ST, h = kvh * group + it / nqb;
        const int m0 = static_cast<int>(n0) + (it % nqb) * BM;
        if (it >= ST) mbar_wait(empty(s), static_cast<std::uint32_t>((it / ST - 1) & 1));
        mbar_arrive_expect_tx(full(s), 2 * Tr::tile_bytes);
        for (int pn = 0; pn < PN; ++pn) {
          tma_load_2d(q_s(s) + pn * BM * 128, &q_map, full(s), h * D + 64 * pn, m0);
          tma_load_2d(do_s(s) + pn * BM * 128, &do_map, full(s), h * D + 64 * pn, m0);
        }
      }
    } else if (threadIdx.x >= 128 - Tr::loaders) {
      const int i = threadIdx.x - (128 - Tr::loaders);  // query row of the tile
      for (int it = 0; it < iters; ++it) {
        const int s = it % ST, h = kvh * group + it / nqb;
        const std::int64_t row = n0 + static_cast<std::int64_t>(it % nqb) * BM + i;
        if (it >= ST) mbar_wait(empty(s), static_cast<std::uint32_t>((it / ST - 1) & 1));
        const bool ok = row < w.end;  // past the end: finite placeholders, masked below
        lse_p(s)[i] = ok ? p.lse[row * p.heads + h] * log2e : 0.f;
        dvec_p(s)[i] = ok ? p.dvec[row * p.heads + h] : 0.f;
        mbar_arrive(full(s));  // release: the stores above are visible to the waiters
      }
    }
    return;
  }

  // ---- consumers ----
  regs_claim<Tr::consumer_regs>();
  const int cw = wg - 1;
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const std::int64_t key0 = n0 + 64 * cw;  // this warp group's first key
  const std::int64_t krow[2] = {key0 + 16 * warp + g, key0 + 16 * warp + g + 8};

  float dk[O_N], dv[O_N];
#pragma unroll
  for (int i = 0; i < O_N; ++i) dk[i] = dv[i] = 0.f;

  mbar_wait(kv_full, 0);
  for (int it = 0; it < iters; ++it) {
    const int s = it % ST;
    const std::int64_t m0 = n0 + static_cast<std::int64_t>(it % nqb) * BM;
    mbar_wait(full(s), static_cast<std::uint32_t>((it / ST) & 1));

    // S^T = K Q^T and dP^T = V dO^T: rows = 64 keys, cols = BM queries.
    float st[S_N], dpt[S_N];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t off_a = (ks / 4) * BN * 128 + cw * 64 * 128 + (ks % 4) * 32;
      const std::uint32_t off_b = (ks / 4) * BM * 128 + (ks % 4) * 32;
      wgmma_m64n64k16_ss(st, sw128_desc(k_s + off_a, 16, 1024), sw128_desc(q_s(s) + off_b, 16, 1024), ks > 0);
    }
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t off_a = (ks / 4) * BN * 128 + cw * 64 * 128 + (ks % 4) * 32;
      const std::uint32_t off_b = (ks / 4) * BM * 128 + (ks % 4) * 32;
      wgmma_m64n64k16_ss(dpt, sw128_desc(v_s + off_a, 16, 1024), sw128_desc(do_s(s) + off_b, 16, 1024), ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(st);
    fence_regs(dpt);

    // Valid (key j, query i): j <= i and i < end.
    const bool need_mask = m0 < key0 + 64 || m0 + BM > w.end;
    const float* lse_s = lse_p(s);
    const float* dd_s = dvec_p(s);
#pragma unroll
    for (int nt = 0; nt < BM / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int col = nt * 8 + 2 * t + (c % 2);
        const std::int64_t qi = m0 + col;
        const bool masked = need_mask && (krow[c / 2] > qi || qi >= w.end);
        const float pr = masked ? 0.f : exp2f(st[4 * nt + c] * p.scale_log2 - lse_s[col]);
        st[4 * nt + c] = pr;                              // P^T
        dpt[4 * nt + c] = pr * (dpt[4 * nt + c] - dd_s[col]);  // dS^T (unscaled)
      }
    std::uint32_t pa[BM / 16][4], sa[BM / 16][4];
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        pa[kk][i] = pack_bf16(st[8 * kk + 2 * i], st[8 * kk + 2 * i + 1]);
        sa[kk][i] = pack_bf16(dpt[8 * kk + 2 * i], dpt[8 * kk + 2 * i + 1]);
      }

    // dV += P^T dO, dK += dS^T Q: k-steps over the BM queries; B read N-major.
    fence_regs(dv);
    fence_regs(dk);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      const std::uint64_t bo = sw128_desc(do_s(s) + kk * 16 * 128, BM * 128, 1024);
      const std::uint64_t bq = sw128_desc(q_s(s) + kk * 16 * 128, BM * 128, 1024);
      if constexpr (D == 128) {
        wgmma_m64n128k16_rs_tb(dv, pa[kk], bo, 1);
        wgmma_m64n128k16_rs_tb(dk, sa[kk], bq, 1);
      } else {
        wgmma_m64n64k16_rs_tb(dv, pa[kk], bo, 1);
        wgmma_m64n64k16_rs_tb(dk, sa[kk], bq, 1);
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(dv);
    fence_regs(dk);
    mbar_arrive(empty(s));
  }

  const std::int64_t ldk = static_cast<std::int64_t>(p.kv_heads) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = krow[r];
    if (row >= w.end) continue;
    __nv_bfloat16* dkr = p.dk + row * ldk + kvh * D + 2 * t;
    __nv_bfloat16* dvr = p.dv + row * ldk + kvh * D + 2 * t;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      *reinterpret_cast<__nv_bfloat162*>(dkr + dt * 8) =
          __floats2bfloat162_rn(dk[4 * dt + 2 * r] * p.scale, dk[4 * dt + 2 * r + 1] * p.scale);
      *reinterpret_cast<__nv_bfloat162*>(dvr + dt * 8) = __floats2bfloat162_rn(dv[4 * dt + 2 * r], dv[4 * dt + 2 * r + 1]);
    }
  }
#else
  __trap();
#endif
}

// ---- dq ------------------------------------------------------------------------------

template <class Tr>
__global__ void __launch_bounds__(Tr::threads, 1)
    attention_dq_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                             const __grid_constant__ CUtensorMap v_map, const __grid_constant__ CUtensorMap do_map,
                             bwd_sm90_params p) {
#if STATICGRAD_SM90A
  using namespace fwd_detail;
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, ST = Tr::stages, PN = Tr::panels;
  constexpr int S_N = BN / 8 * 4;  // S accumulators per thread (m64n64: 32)
  constexpr int O_N = D / 8 * 4;   // dQ accumulators per thread
  constexpr float log2e = 1.4426950408889634f;

  // Heavy work first: the last query blocks of a sequence see the most keys.
  const std::int64_t item = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;
  const work w = find<BM>(p.seq_start, p.nseq, p.tokens, item);
  if (w.seq < 0) return;
  const int h = blockIdx.y, kvh = h / (p.heads / p.kv_heads);
  const std::int64_t m0 = w.row0;
  const std::int64_t key_end = m0 + BM < w.end ? m0 + BM : w.end;
  const int nkb = static_cast<int>((key_end - w.begin + BN - 1) / BN);

  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;
  const std::uint32_t q_s = base, do_s = base + Tr::q_bytes;
  auto k_s = [&](int s) { return base + 2u * Tr::q_bytes + static_cast<std::uint32_t>(s) * Tr::kv_bytes; };
  auto v_s = [&](int s) { return base + 2u * Tr::q_bytes + static_cast<std::uint32_t>(ST + s) * Tr::kv_bytes; };
  const std::uint32_t bars = base + Tr::tiles_bytes;
  const std::uint32_t q_full = bars;
  auto k_full = [&](int s) { return bars + 8u * (1 + s); };
  auto v_full = [&](int s) { return bars + 8u * (1 + ST + s); };
  auto empty = [&](int s) { return bars + 8u * (1 + 2 * ST + s); };

  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < ST; ++s) {
      mbar_init(k_full(s), 1);
      mbar_init(v_full(s), 1);
      mbar_init(empty(s), 128 * Tr::consumers);
    }
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    regs_release<Tr::producer_regs>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(&k_map);
      tma_prefetch_map(&v_map);
      mbar_arrive_expect_tx(q_full, 2 * Tr::q_bytes);
      for (int pn = 0; pn < PN; ++pn) {
        tma_load_2d(q_s + pn * BM * 128, &q_map, q_full, h * D + 64 * pn, static_cast<int>(m0));
        tma_load_2d(do_s + pn * BM * 128, &do_map, q_full, h * D + 64 * pn, static_cast<int>(m0));
      }
      for (int j = 0; j < nkb; ++j) {
        const int s = j % ST;
        if (j >= ST) mbar_wait(empty(s), static_cast<std::uint32_t>((j / ST - 1) & 1));
        const int n0 = static_cast<int>(w.begin) + j * BN;
        mbar_arrive_expect_tx(k_full(s), Tr::kv_bytes);
        for (int pn = 0; pn < PN; ++pn) tma_load_2d(k_s(s) + pn * BN * 128, &k_map, k_full(s), kvh * D + 64 * pn, n0);
        mbar_arrive_expect_tx(v_full(s), Tr::kv_bytes);
        for (int pn = 0; pn < PN; ++pn) tma_load_2d(v_s(s) + pn * BN * 128, &v_map, v_full(s), kvh * D + 64 * pn, n0);
      }
    }
    return;
  }

  regs_claim<Tr::consumer_regs>();
  const int cw = wg - 1;
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const std::int64_t wg_row0 = m0 + 64 * cw;
  const std::int64_t qrow[2] = {wg_row0 + 16 * warp + g, wg_row0 + 16 * warp + g + 8};
  float lse2[2], dd[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool ok = qrow[r] < w.end;  // rows past the end are computed but never stored
    lse2[r] = ok ? p.lse[qrow[r] * p.heads + h] * log2e : 0.f;
    dd[r] = ok ? p.dvec[qrow[r] * p.heads + h] : 0.f;
  }

  float dq[O_N];
#pragma unroll
  for (int i = 0; i < O_N; ++i) dq[i] = 0.f;

  mbar_wait(q_full, 0);
  for (int j = 0; j < nkb; ++j) {
    const int s = j % ST;
    const std::uint32_t parity = static_cast<std::uint32_t>((j / ST) & 1);
    const std::int64_t n0 = w.begin + static_cast<std::int64_t>(j) * BN;

    float sc[S_N], dp[S_N];
    mbar_wait(k_full(s), parity);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t a = q_s + (ks / 4) * BM * 128 + cw * 64 * 128 + (ks % 4) * 32;
      const std::uint32_t b = k_s(s) + (ks / 4) * BN * 128 + (ks % 4) * 32;
      wgmma_m64n64k16_ss(sc, sw128_desc(a, 16, 1024), sw128_desc(b, 16, 1024), ks > 0);
    }
    wgmma_commit();
    mbar_wait(v_full(s), parity);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t a = do_s + (ks / 4) * BM * 128 + cw * 64 * 128 + (ks % 4) * 32;
      const std::uint32_t b = v_s(s) + (ks / 4) * BN * 128 + (ks % 4) * 32;
      wgmma_m64n64k16_ss(dp, sw128_desc(a, 16, 1024), sw128_desc(b, 16, 1024), ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(sc);
    fence_regs(dp);

    const bool need_mask = n0 + BN - 1 > wg_row0;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int r = c / 2;
        const bool masked = need_mask && n0 + nt * 8 + 2 * t + (c % 2) > qrow[r];
        const float pr = masked ? 0.f : exp2f(sc[4 * nt + c] * p.scale_log2 - lse2[r]);
        sc[4 * nt + c] = pr * (dp[4 * nt + c] - dd[r]);  // dS (unscaled)
      }
    std::uint32_t sa[BN / 16][4];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) sa[kk][i] = pack_bf16(sc[8 * kk + 2 * i], sc[8 * kk + 2 * i + 1]);

    // dQ += dS K: k-steps over the BN keys; K read N-major.
    fence_regs(dq);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const std::uint64_t b = sw128_desc(k_s(s) + kk * 16 * 128, BN * 128, 1024);
      if constexpr (D == 128) wgmma_m64n128k16_rs_tb(dq, sa[kk], b, 1);
      else wgmma_m64n64k16_rs_tb(dq, sa[kk], b, 1);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(dq);
    mbar_arrive(empty(s));
  }

  const std::int64_t ldq = static_cast<std::int64_t>(p.heads) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = qrow[r];
    if (row >= w.end) continue;
    __nv_bfloat16* dst = p.dq + row * ldq + h * D + 2 * t;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
      *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8) =
          __floats2bfloat162_rn(dq[4 * dt + 2 * r] * p.scale, dq[4 * dt + 2 * r + 1] * p.scale);
  }
#else
  __trap();
#endif
}

// ---- host side ----------------------------------------------------------------------

// dk/dv then dq, after D_i has been written to p.dvec (same stream).
template <int D>
void attention_backward_sm90(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                             const __nv_bfloat16* dout, const bwd_sm90_params& p, cudaStream_t stream) {
  const auto T = static_cast<std::uint64_t>(p.tokens);
  const std::uint64_t qcols = static_cast<std::uint64_t>(p.heads) * D, kcols = static_cast<std::uint64_t>(p.kv_heads) * D;
  {
    using Tr = attention_dkdv_sm90_traits<D>;
    const CUtensorMap qm = bf16_panel_map(q, T, qcols, Tr::block_m);
    const CUtensorMap dom = bf16_panel_map(dout, T, qcols, Tr::block_m);
    const CUtensorMap km = bf16_panel_map(k, T, kcols, Tr::block_n);
    const CUtensorMap vm = bf16_panel_map(v, T, kcols, Tr::block_n);
    const auto kernel = attention_dkdv_sm90_kernel<Tr>;
    check_launch_registers<Tr, attention_dkdv_sm90_kernel<Tr>>("the Hopper dk/dv backward");
    SG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::smem_bytes));
    const dim3 grid(static_cast<unsigned>(p.tokens / Tr::block_n + p.nseq), static_cast<unsigned>(p.kv_heads));
    kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(qm, km, vm, dom, p);
    SG_CUDA_CHECK(cudaGetLastError());
  }
  {
    using Tr = attention_dq_sm90_traits<D>;
    const CUtensorMap qm = bf16_panel_map(q, T, qcols, Tr::block_m);
    const CUtensorMap dom = bf16_panel_map(dout, T, qcols, Tr::block_m);
    const CUtensorMap km = bf16_panel_map(k, T, kcols, Tr::block_n);
    const CUtensorMap vm = bf16_panel_map(v, T, kcols, Tr::block_n);
    const auto kernel = attention_dq_sm90_kernel<Tr>;
    check_launch_registers<Tr, attention_dq_sm90_kernel<Tr>>("the Hopper dq backward");
    SG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::smem_bytes));
    const dim3 grid(static_cast<unsigned>(p.tokens / Tr::block_m + p.nseq), static_cast<unsigned>(p.heads));
    kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(qm, km, vm, dom, p);
    SG_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace staticgrad::cuda::hopper
