#pragma once
// Causal GQA flash-attention forward on Hopper tensor cores (sm_90a): wgmma,
// TMA and warp specialisation. Same contract as attention_fwd_kernel in
// ../attention.cuh (q, out [T, H*D]; k, v [T, KV*D] bf16; lse [T, H] f32;
// packed sequences by seq_start), which calls this on compute capability 9.0.
//
// One CTA = one (sequence, 128-query block, head) work item, 3 warp groups:
//  - warp group 0, the producer (24 registers a thread after setmaxnreg):
//    one thread loads Q once and K, V key block by key block with the TMA
//    into a ring of 3 shared-memory stages, each stage guarded by a "full"
//    mbarrier per tensor (K and V apart, so S = Q K^T starts before V has
//    landed) and an "empty" mbarrier the consumers arrive on;
//  - warp groups 1 and 2, the consumers (240 registers), 64 query rows each:
//    per key block S = Q K^T (wgmma m64n128k16, A = Q and B = K from shared
//    memory), the online softmax in registers (f32, exp2 domain), then
//    O += P V (wgmma m64nDk16, A = P from registers as bf16, B = V from shared
//    memory read N-major). O stays in registers; the epilogue divides by the
//    row sums and stores bf16 O and f32 lse straight from registers.
// The default consumer loop is software pipelined: S of key block j is
// issued together with P V of block j - 1 and its softmax runs while that
// P V is on the tensor cores (wgmma.wait_group 1); and the two consumer warp
// groups "ping-pong" (named barriers 1, 2): they take turns issuing their
// products, so one warp group's softmax overlaps the other's products. The
// pipelined loop holds K of block j and V of block j - 1 at once, hence 3
// stages. Pipelined = false keeps the plain loop (one block at a time).
// Tiles: BM = 128 queries, BN = 128 keys; shared memory = Q (BM x D) plus
// 3 x (K, V) (BN x D each), all as 128-byte-swizzle panels of 64 columns (see
// sm90.cuh): D = 128: 32 + 3 x 64 = 224 KiB; D = 64: 16 + 3 x 32 = 112 KiB.
// Registers per consumer thread: S 64 f32, O D/2 f32, P 32 x 32-bit (bf16
// pairs); ptxas reports no spills.
//
// Varlen without zero fill: the tensor maps cover all T rows, so a key block
// that runs past its sequence's end reads the next sequence's rows (or TMA
// zeros past T). Those keys are beyond every valid query of the block and the
// causal mask removes them; query rows past the end are computed but never
// stored. Key blocks are aligned to the sequence start, so only the last key
// block of a query block (the diagonal one) needs a mask.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/hopper/sm90.cuh"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cuda::hopper {

template <int HeadDim>
struct attention_fwd_sm90_traits {
  static_assert(HeadDim == 64 || HeadDim == 128,
                "the Hopper attention forward is built for head_dim 64 and 128 (P V is one wgmma of N = head_dim)");
  static constexpr int head_dim = HeadDim;
  static constexpr int consumers = 2;                 // consumer warp groups
  static constexpr int threads = 128 * (1 + consumers);  // + the producer warp group
  static constexpr int block_m = 64 * consumers;      // queries per CTA
  static constexpr int block_n = 128;                 // keys per step: S is one m64n128 wgmma per warp group
  static constexpr int stages = 3;  // the pipelined loop holds two (K of block j, V of block j - 1)
  static constexpr int panels = HeadDim / 64;         // 128-byte-swizzle panels across the head dim
  static constexpr int q_bytes = block_m * HeadDim * 2;
  static constexpr int kv_bytes = block_n * HeadDim * 2;  // one K (or V) stage
  static constexpr int tiles_bytes = q_bytes + 2 * stages * kv_bytes;
  static constexpr int barrier_bytes = 8 * (1 + 3 * stages);  // q_full, k_full[], v_full[], empty[]
  static constexpr int smem_bytes = 1024 /* alignment slack */ + tiles_bytes + barrier_bytes;
  static_assert(smem_bytes <= 227 * 1024, "the stages must fit in one SM's 227 KiB of shared memory");
  static constexpr int producer_regs = 24, consumer_regs = 240;
  static_assert(fits_register_pool(threads, producer_regs, consumers, consumer_regs),
                "the warp groups' setmaxnreg split must fit the CTA's register pool (threads x launch_regs), "
                "or the consumers' setmaxnreg.inc waits forever");
};

struct fwd_sm90_params {
  __nv_bfloat16* out;
  float* lse;
  const std::int32_t* seq_start;
  std::int64_t tokens;
  int nseq, heads, kv_heads;
  float scale_log2;  // scale * log2(e)
};

namespace fwd_detail {

constexpr float ln2 = 0.6931471805599453f;

// Same (sequence, block) work items as attn_detail::find_work in ../attention.cuh.
struct work {
  int seq;
  std::int64_t row0, begin, end;
};
template <int Block>
__device__ __forceinline__ work find(const std::int32_t* seq_start, int nseq, std::int64_t T, std::int64_t item) {
  auto first = [&](int s) -> std::int64_t { return static_cast<std::int64_t>(seq_start[s]) / Block + s; };
  int lo = 0, hi = nseq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first(mid) <= item) lo = mid; else hi = mid - 1;
  }
  work w{-1, 0, 0, 0};
  std::int64_t b = seq_start[lo], e = seq_start[lo + 1];
  b = b < 0 ? 0 : (b > T ? T : b);
  e = e < b ? b : (e > T ? T : e);
  const std::int64_t blk = item - first(lo);
  if (blk < 0 || b + blk * Block >= e) return w;
  w.seq = lo;
  w.row0 = b + blk * Block;
  w.begin = b;
  w.end = e;
  return w;
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

}  // namespace fwd_detail

template <class Tr, bool Pipelined>
__global__ void __launch_bounds__(Tr::threads, 1)
    attention_fwd_sm90_kernel(const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                              const __grid_constant__ CUtensorMap v_map, fwd_sm90_params p) {
#if STATICGRAD_SM90A
  using namespace fwd_detail;
  constexpr int D = Tr::head_dim, BM = Tr::block_m, BN = Tr::block_n, ST = Tr::stages, PN = Tr::panels;
  constexpr int ST_N = BN / 8 * 4;  // S accumulators per thread (m64n128: 64)
  constexpr int O_N = D / 8 * 4;    // O accumulators per thread (m64nD: D / 2)

  // Heavy work first: the last query blocks of a sequence see the most keys.
  const std::int64_t item = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;
  const work w = find<BM>(p.seq_start, p.nseq, p.tokens, item);
  if (w.seq < 0) return;
  const int h = blockIdx.y, kvh = h / (p.heads / p.kv_heads);
  const std::int64_t m0 = w.row0;
  const std::int64_t key_end = m0 + BM < w.end ? m0 + BM : w.end;
  const int nkb = static_cast<int>((key_end - w.begin + BN - 1) / BN);

  extern __shared__ unsigned char smem_raw[];
  const std::uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;  // panels are 1024-byte aligned
  const std::uint32_t q_s = base;
  auto k_s = [&](int s) { return base + Tr::q_bytes + static_cast<std::uint32_t>(s) * Tr::kv_bytes; };
  auto v_s = [&](int s) { return base + Tr::q_bytes + static_cast<std::uint32_t>(ST + s) * Tr::kv_bytes; };
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
      mbar_init(empty(s), 128 * Tr::consumers);  // every consumer thread arrives
    }
    mbar_fence_init();
  }
  __syncthreads();

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    // ---- producer ----
    regs_release<Tr::producer_regs>();
    if (threadIdx.x == 0) {
      tma_prefetch_map(&q_map);
      tma_prefetch_map(&k_map);
      tma_prefetch_map(&v_map);
      mbar_arrive_expect_tx(q_full, Tr::q_bytes);
      for (int pn = 0; pn < PN; ++pn)
        tma_load_2d(q_s + pn * BM * 128, &q_map, q_full, h * D + 64 * pn, static_cast<int>(m0));
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

  // ---- consumers ----
  regs_claim<Tr::consumer_regs>();
  const int cw = wg - 1;  // consumer index: rows [64 cw, 64 cw + 64) of the block
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const std::int64_t qrow[2] = {m0 + 64 * cw + 16 * warp + g, m0 + 64 * cw + 16 * warp + g + 8};
  const std::int64_t wg_row0 = m0 + 64 * cw;

  float o[O_N];
#pragma unroll
  for (int i = 0; i < O_N; ++i) o[i] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};

  // Online softmax of one S tile in place (exp2 domain): masks the diagonal
  // block, updates the row maxima and sums, returns the factor alpha each
  // row's O must be scaled by. Only the diagonal block (the last) holds keys
  // beyond some row of this warp group.
  auto softmax = [&](float (&sc)[ST_N], std::int64_t n0, float (&alpha)[2]) {
    const bool need_mask = n0 + BN - 1 > wg_row0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          float x = sc[4 * nt + 2 * r + c] * p.scale_log2;
          if (need_mask && n0 + nt * 8 + 2 * t + c > qrow[r]) x = -INFINITY;
          sc[4 * nt + 2 * r + c] = x;
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(mrow[r], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(mrow[r] - m_use);
      mrow[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float e = exp2f(sc[4 * nt + 2 * r + c] - m_use);
          sc[4 * nt + 2 * r + c] = e;
          sum += e;
        }
      lrow[r] = lrow[r] * alpha[r] + sum;
    }
  };
  auto rescale_o = [&](const float (&alpha)[2]) {
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        o[4 * dt + 2 * r] *= alpha[r];
        o[4 * dt + 2 * r + 1] *= alpha[r];
      }
  };
  // P as bf16 A fragments: n8 tiles 2kk, 2kk + 1 of S are k-step kk of P V.
  std::uint32_t pa[BN / 16][4];
  auto pack_p = [&](const float (&sc)[ST_N]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) pa[kk][i] = pack_bf16(sc[8 * kk + 2 * i], sc[8 * kk + 2 * i + 1]);
  };
  // S = Q K^T: D / 16 k-steps; both operands K-major (head dim contiguous).
  auto issue_s = [&](float (&sc)[ST_N], int s) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t a = q_s + (ks / 4) * BM * 128 + cw * 64 * 128 + (ks % 4) * 32;
      const std::uint32_t b = k_s(s) + (ks / 4) * BN * 128 + (ks % 4) * 32;
      wgmma_m64n128k16_ss(sc, sw128_desc(a, 16, 1024), sw128_desc(b, 16, 1024), ks > 0);
    }
  };
  // O += P V: BN / 16 k-steps over keys; V is N-major (head dim contiguous).
  auto issue_pv = [&](int s) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      const std::uint64_t b = sw128_desc(v_s(s) + kk * 16 * 128, BN * 128, 1024);
      if constexpr (D == 128) wgmma_m64n128k16_rs_tb(o, pa[kk], b, 1);
      else wgmma_m64n64k16_rs_tb(o, pa[kk], b, 1);
    }
  };
  auto parity_of = [](int j) { return static_cast<std::uint32_t>((j / ST) & 1); };

  mbar_wait(q_full, 0);
  if constexpr (!Pipelined) {
    for (int j = 0; j < nkb; ++j) {
      const int s = j % ST;
      const std::int64_t n0 = w.begin + static_cast<std::int64_t>(j) * BN;
      float sc[ST_N], alpha[2];
      mbar_wait(k_full(s), parity_of(j));
      wgmma_fence();
      issue_s(sc, s);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(sc);
      softmax(sc, n0, alpha);
      rescale_o(alpha);
      pack_p(sc);
      mbar_wait(v_full(s), parity_of(j));
      fence_regs(o);
      wgmma_fence();
      issue_pv(s);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(empty(s));  // this thread is done with stage s
    }
  } else {
    // Software pipelined: S of block j is issued together with P V of block
    // j - 1, and its softmax runs while that P V is on the tensor cores.
    // Ping-pong: the two consumer warp groups take turns issuing (named
    // barriers 1 and 2), so one's softmax overlaps the other's products.
    const int my_turn = 1 + cw, their_turn = 1 + (cw ^ 1);
    auto turn_begin = [&] { named_sync(my_turn, 256); };
    auto turn_end = [&](bool last) {
      if (!(last && cw == 1)) named_arrive(their_turn, 256);  // no arrival nobody waits for
    };
    if (cw == 1) named_arrive(1, 256);  // consumer 0 goes first
    float sc[ST_N], alpha[2];
    turn_begin();
    mbar_wait(k_full(0), 0);
    wgmma_fence();
    issue_s(sc, 0);
    wgmma_commit();
    turn_end(false);
    wgmma_wait<0>();
    fence_regs(sc);
    softmax(sc, w.begin, alpha);  // O is still 0: no rescale
    pack_p(sc);
    for (int j = 1; j < nkb; ++j) {
      const int s = j % ST, sp = (j - 1) % ST;
      const std::int64_t n0 = w.begin + static_cast<std::int64_t>(j) * BN;
      turn_begin();
      mbar_wait(k_full(s), parity_of(j));
      fence_regs(o);
      wgmma_fence();
      issue_s(sc, s);
      wgmma_commit();
      mbar_wait(v_full(sp), parity_of(j - 1));
      issue_pv(sp);
      wgmma_commit();
      turn_end(false);
      wgmma_wait<1>();  // S of block j is done; P V of block j - 1 may still run
      fence_regs(sc);
      softmax(sc, n0, alpha);
      wgmma_wait<0>();
      fence_regs(o);
      mbar_arrive(empty(sp));  // K and V of block j - 1 are consumed
      rescale_o(alpha);
      pack_p(sc);
    }
    const int sl = (nkb - 1) % ST;
    turn_begin();
    mbar_wait(v_full(sl), parity_of(nkb - 1));
    fence_regs(o);
    wgmma_fence();
    issue_pv(sl);
    wgmma_commit();
    turn_end(true);
    wgmma_wait<0>();
    fence_regs(o);
    mbar_arrive(empty(sl));
  }

  // Epilogue: normalise; write out (bf16) and lse (natural log) for rows < end.
  const std::int64_t ldq = static_cast<std::int64_t>(p.heads) * D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = lrow[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = 1.f / l;
    const std::int64_t row = qrow[r];
    if (row < w.end) {
      __nv_bfloat16* orow = p.out + row * ldq + h * D + 2 * t;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        *reinterpret_cast<__nv_bfloat162*>(orow + dt * 8) =
            __floats2bfloat162_rn(o[4 * dt + 2 * r] * inv, o[4 * dt + 2 * r + 1] * inv);
      if (t == 0) p.lse[row * p.heads + h] = (mrow[r] + log2f(l)) * ln2;
    }
  }
#else
  __trap();  // built for another target: the host only launches this on sm_90a
#endif
}

// ---- host side ----------------------------------------------------------------------

// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    SG_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || f == nullptr)
      throw error("cuda attention: the driver offers no cuTensorMapEncodeTiled (CUDA 12 or newer is needed)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A row-major [rows, cols] bf16 matrix, boxes of [box_rows][64] with the
// 128-byte swizzle (sm90.cuh's panel layout).
inline CUtensorMap bf16_panel_map(const void* base, std::uint64_t rows, std::uint64_t cols, std::uint32_t box_rows) {
  CUtensorMap m{};
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {cols * 2};
  const cuuint32_t box[2] = {64, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims,
                                          strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw error("cuda attention: cuTensorMapEncodeTiled failed (error " + std::to_string(static_cast<int>(r)) +
                ") for a [" + std::to_string(rows) + ", " + std::to_string(cols) + "] bf16 tensor");
  return m;
}

// The premise of every setmaxnreg split (sm90.cuh, launch_regs): ptxas gave
// the kernel enough registers a thread that the CTA's pool, threads x that,
// covers the split. Fewer (another ptxas, another cap) would leave the
// consumers' setmaxnreg.inc waiting forever, so refuse to launch instead.
// Checked once per kernel.
template <class Tr, auto Kernel>
void check_launch_registers(const char* kernel_name) {
  static const int regs = [] {
    cudaFuncAttributes a{};
    SG_CUDA_CHECK(cudaFuncGetAttributes(&a, Kernel));
    return a.numRegs;
  }();
  const int need = 128 * Tr::producer_regs + 128 * Tr::consumers * Tr::consumer_regs;
  if (regs * Tr::threads < need)
    throw error(std::string("cuda attention: ") + kernel_name + " was built with " + std::to_string(regs) +
                " registers a thread; its setmaxnreg split needs " + std::to_string(need) + " for " +
                std::to_string(Tr::threads) + " threads (" + std::to_string(launch_regs(Tr::threads)) +
                " a thread expected): launching it would hang");
}

// True when the current device runs sm_90a code (compute capability 9.0).
inline bool device_is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return false;
  return major == 9 && minor == 0;
}

// pipelined: the software-pipelined, ping-pong consumer loop (default);
// false: one key block at a time (kept to compare and as a fallback).
template <int D>
void attention_forward_sm90(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                            const fwd_sm90_params& p, cudaStream_t stream, bool pipelined = true) {
  using Tr = attention_fwd_sm90_traits<D>;
  const auto T = static_cast<std::uint64_t>(p.tokens);
  const CUtensorMap qm = bf16_panel_map(q, T, static_cast<std::uint64_t>(p.heads) * D, Tr::block_m);
  const CUtensorMap km = bf16_panel_map(k, T, static_cast<std::uint64_t>(p.kv_heads) * D, Tr::block_n);
  const CUtensorMap vm = bf16_panel_map(v, T, static_cast<std::uint64_t>(p.kv_heads) * D, Tr::block_n);
  const auto kernel = pipelined ? attention_fwd_sm90_kernel<Tr, true> : attention_fwd_sm90_kernel<Tr, false>;
  if (pipelined) check_launch_registers<Tr, attention_fwd_sm90_kernel<Tr, true>>("the Hopper forward (pipelined)");
  else check_launch_registers<Tr, attention_fwd_sm90_kernel<Tr, false>>("the Hopper forward");
  SG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::smem_bytes));
  const dim3 grid(static_cast<unsigned>(p.tokens / Tr::block_m + p.nseq), static_cast<unsigned>(p.heads));
  kernel<<<grid, Tr::threads, Tr::smem_bytes, stream>>>(qm, km, vm, p);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace staticgrad::cuda::hopper
