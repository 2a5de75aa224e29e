#pragma once
// The CUDA row-group kernel: one template over a generated step list
// (plan_desc.hpp; the steps come from tools/plan_codegen.cpp), forward and
// backward. It reproduces cpu::program::run_row_group / run_row_step_bwd:
// per token row, the group's ops in order; values internal to the group in
// scratch; inputs from buffers and parameter vectors; outputs written, or
// added to for gradients with acc.
//
// Invariants / design:
//   * rows_per_cta token rows per CTA, threads_per_row threads per row (a
//     multiple of 32); threads stride over the row two elements at a time
//     (bf16x2 loads and stores: every width is even, every row 4-byte aligned);
//   * storage bf16 (activations, gradients, parameters), f32 statistics;
//     all math in f32; scratch rows are f32 in shared memory, so a group-internal
//     value is never rounded (as on the CPU reference, where it is S);
//   * RoPE: (cos, sin) of each pair index is computed once per row (not per
//     element: heads share it) into shared memory; a thread then owns two
//     adjacent pairs (i, i+d/2), (i+1, i+1+d/2) of one head, so rotating in
//     place (out == in) is race-free;
//   * RMSNorm: a block reduction of the row sum (warp shuffles, then one f32
//     per warp in shared memory), then elementwise;
//   * __syncthreads() between steps: a later step may read any element of a
//     row an earlier step wrote (through global memory or scratch); rows past
//     T idle but still reach every barrier;
//   * the math is the op headers' registered functors (row_op<kind>, walked
//     by their row_form), the same code the CPU row executor runs
//     (backend/cpu/row_group.hpp); no op is named here.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::cuda {

using bf16 = __nv_bfloat16;

template <graph::op_kind K>
constexpr row_form form_of() {
  if constexpr (is_row_op<K>) return row_op<K>::form;
  else return row_form::pointwise;
}

// The row_form of a registered row op, as a value (for launch traits).
constexpr row_form row_op_form(graph::op_kind k) {
  row_form f = row_form::pointwise;
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (((static_cast<graph::op_kind>(I) == k) ? (void)(f = form_of<static_cast<graph::op_kind>(I)>()) : (void)0), ...);
  }(std::make_integer_sequence<int, static_cast<int>(graph::op_kind::count_)>{});
  return f;
}


// The runtime arguments of every row-group kernel: a plain struct, passed by
// value. buf[j] is buffer argument j of the generated tables: bf16 [T, width]
// (f32 [T, 1] for stat bindings). par[p] is bf16 [width].
struct row_group_args {
  void* buf[max_buffers] = {};
  const bf16* par[max_params] = {};
  const std::int32_t* positions = nullptr;  // [T] RoPE positions
  std::int64_t tokens = 0;                  // T
  float eps = 1e-6f;                        // RMSNorm epsilon
  float rope_theta = 1e6f;                  // RoPE base
};

// Launch shape of a group (flash-attention style traits): enough threads per
// row that each thread moves ~2 element pairs (4 elements) of the widest row,
// at most 256; narrow rows share a CTA of ~256 threads.
template <class Group>
struct row_group_traits {
  static constexpr int pairs = Group::width_max / 2;
  static constexpr int want = (pairs + 1) / 2;
  static constexpr int threads_per_row = want >= 256 ? 256 : ((want + 31) / 32) * 32;
  static constexpr int rows_per_cta = 256 / threads_per_row;
  static constexpr int threads = threads_per_row * rows_per_cta;
  static constexpr int warps_per_row = threads_per_row / 32;
  // Rotary coefficients per row: (cos, sin) of each pair index, the widest head dim of the group.
  static constexpr int rot_floats = [] {
    int d = 0;
    for (const auto& s : Group::steps)
      if (row_op_form(s.op) == row_form::rotary && s.attr > d) d = s.attr;
    return d;
  }();
  // Shared memory: the scratch rows (f32) of every row of the CTA, then the coefficients.
  static constexpr int smem_floats_per_row = Group::n_scratch * Group::width_max + rot_floats;
  static constexpr int smem_bytes = rows_per_cta * smem_floats_per_row * 4;
  static_assert(threads_per_row % 32 == 0 && threads <= 1024, "row_group_traits: threads per row must be whole warps");
  static_assert(smem_bytes <= 227 * 1024, "row_group_traits: the scratch rows do not fit in shared memory (sm_90: 227 KiB)");
};

namespace detail {

// Per-thread view of one token row.
struct row_ctx {
  const row_group_args* a;
  std::int64_t t;          // token
  int lane;                // thread index within the row
  int tpr;                 // threads per row
  float* scratch;          // this row's scratch rows, [n_scratch][width_max]
  int width_max;
  float* red;              // this row's reduction slots, [warps_per_row]
  float* rot;              // this row's rotary coefficients, [2 * (d / 2)]: cos, sin of pair i
  bool active;             // t < T
};

// Element pair (i, i+1) of operand O (i even).
template <int O, int W>
__device__ __forceinline__ float2 load2(const row_ctx& c, int i) {
  constexpr operand_kind k = kind_of(O);
  constexpr int j = index_of(O);
  if constexpr (k == operand_kind::buffer) {
    const bf16* row = static_cast<const bf16*>(c.a->buf[j]) + c.t * W;
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + i));
  } else if constexpr (k == operand_kind::scratch) {
    return *reinterpret_cast<const float2*>(c.scratch + j * c.width_max + i);
  } else if constexpr (k == operand_kind::param) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(c.a->par[j] + i));
  } else {
    static_assert(k != operand_kind::none, "load2: a step reads an operand the plan left out");
    return {};
  }
}

// load2, or zeros for an operand the step does not have (unary ops, or an
// input backward does not read).
template <int O, int W>
__device__ __forceinline__ float2 load_or_zero(const row_ctx& c, int i) {
  if constexpr (O == none) return make_float2(0.0f, 0.0f);
  else return load2<O, W>(c, i);
}

// Writes (or adds to, Acc) element pair (i, i+1) of operand O.
template <int O, int W, bool Acc = false>
__device__ __forceinline__ void store2(const row_ctx& c, int i, float2 v) {
  constexpr operand_kind k = kind_of(O);
  constexpr int j = index_of(O);
  if constexpr (k == operand_kind::buffer) {
    __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(static_cast<bf16*>(c.a->buf[j]) + c.t * W + i);
    if constexpr (Acc) {
      const float2 old = __bfloat1622float2(*p);
      v.x = old.x + v.x;
      v.y = old.y + v.y;
    }
    *p = __float22bfloat162_rn(v);
  } else if constexpr (k == operand_kind::scratch) {
    float2* p = reinterpret_cast<float2*>(c.scratch + j * c.width_max + i);
    if constexpr (Acc) {
      v.x += p->x;
      v.y += p->y;
    }
    *p = v;
  } else {
    static_assert(k == operand_kind::none, "store2: a step writes a parameter vector");
  }
}

// Sum of v over the threads of one row (all of them get the result).
// Two barriers: one to publish the warp partials, one before the slots are reused.
template <int WarpsPerRow>
__device__ __forceinline__ float row_sum(const row_ctx& c, float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (c.lane % 32 == 0) c.red[c.lane / 32] = v;
  __syncthreads();
  float s = 0.0f;
#pragma unroll
  for (int w = 0; w < WarpsPerRow; ++w) s += c.red[w];
  __syncthreads();
  return s;
}

// (cos, sin) of every pair index i < d/2 of a rotary step at this row's
// position, computed once per row (not per element) into the row's
// coefficient slots; all threads of the row read them after the barrier.
template <class Op, int D>
__device__ __forceinline__ void rotary_coefficients(const row_ctx& c) {
  for (int i = c.lane; i < D / 2 && c.active; i += c.tpr) {
    float sn, cs;
    sincosf(Op::angle(c.a->positions[c.t], i, D, c.a->rope_theta), &sn, &cs);
    c.rot[2 * i] = cs;
    c.rot[2 * i + 1] = sn;
  }
  __syncthreads();
}

template <class St, class Tr>
__device__ __forceinline__ void run_forward_step(const row_ctx& c) {
  using Op = row_op<St::op>;
  static_assert(is_row_op<St::op>, "a row group holds an op without a registered row functor (row_op<kind> in its header)");
  constexpr int W = St::width;
  if constexpr (Op::form == row_form::rotary) {
    // Two adjacent pairs per thread: (i, i+h), (i+1, i+1+h) of head `head`.
    constexpr int d = St::attr, half = d / 2, quads = W / 4;
    rotary_coefficients<Op, d>(c);
    for (int q = c.lane; q < quads && c.active; q += c.tpr) {
      const int head = q / (half / 2), i = 2 * (q % (half / 2)), e = head * d + i;
      const float2 x1 = load2<St::in0, W>(c, e), x2 = load2<St::in0, W>(c, e + half);
      float2 y1, y2;
      Op::forward(x1.x, x2.x, c.rot[2 * i], c.rot[2 * i + 1], y1.x, y2.x);
      Op::forward(x1.y, x2.y, c.rot[2 * i + 2], c.rot[2 * i + 3], y1.y, y2.y);
      store2<St::out, W>(c, e, y1);
      store2<St::out, W>(c, e + half, y2);
    }
  } else if constexpr (Op::form == row_form::norm) {
    float ss = 0.0f;
    for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
      const float2 x = load2<St::in0, W>(c, i);
      ss += x.x * x.x + x.y * x.y;
    }
    const float r = Op::inv_rms(row_sum<Tr::warps_per_row>(c, ss), W, c.a->eps);
    if constexpr (St::aux != none)
      if (c.active && c.lane == 0) static_cast<float*>(c.a->buf[index_of(St::aux)])[c.t] = r;
    for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
      const float2 x = load2<St::in0, W>(c, i), w = load2<St::in1, W>(c, i);
      store2<St::out, W>(c, i, make_float2(Op::forward(x.x, r, w.x), Op::forward(x.y, r, w.y)));
    }
  } else {
    static_assert(Op::form == row_form::pointwise, "run_forward_step: unknown row_form");
    // Element i of the output reads element i of each input: in place (out == in0) is race-free.
    for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
      const float2 a = load2<St::in0, W>(c, i);
      const float2 b = load_or_zero<St::in1, W>(c, i);
      store2<St::out, W>(c, i, make_float2(Op::forward(a.x, b.x), Op::forward(a.y, b.y)));
    }
  }
}

template <class St, class Tr>
__device__ __forceinline__ void run_backward_step(const row_ctx& c) {
  using Op = row_op<St::op>;
  static_assert(is_row_op<St::op>, "a backward row group holds an op without a registered row functor");
  constexpr int W = St::width;
  if constexpr (Op::form == row_form::rotary) {
    if constexpr (St::dx0 != none) {
      constexpr int d = St::attr, half = d / 2, quads = W / 4;
      rotary_coefficients<Op, d>(c);
      for (int q = c.lane; q < quads && c.active; q += c.tpr) {
        const int head = q / (half / 2), i = 2 * (q % (half / 2)), e = head * d + i;
        const float2 g1 = load2<St::dy, W>(c, e), g2 = load2<St::dy, W>(c, e + half);
        float2 d1, d2;
        Op::backward(g1.x, g2.x, c.rot[2 * i], c.rot[2 * i + 1], d1.x, d2.x);
        Op::backward(g1.y, g2.y, c.rot[2 * i + 2], c.rot[2 * i + 3], d1.y, d2.y);
        store2<St::dx0, W, St::acc0>(c, e, d1);
        store2<St::dx0, W, St::acc0>(c, e + half, d2);
      }
    }
  } else if constexpr (Op::form == row_form::norm) {
    const float r = c.active ? static_cast<const float*>(c.a->buf[index_of(St::aux)])[c.t] : 0.0f;
    float dot = 0.0f;
    for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
      const float2 g = load2<St::dy, W>(c, i), x = load2<St::in0, W>(c, i), w = load2<St::in1, W>(c, i);
      dot += Op::dot_term(g.x, x.x, w.x, r) + Op::dot_term(g.y, x.y, w.y, r);
    }
    const float mean = row_sum<Tr::warps_per_row>(c, dot) / static_cast<float>(W);
    if constexpr (St::dx0 != none)
      for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
        const float2 g = load2<St::dy, W>(c, i), x = load2<St::in0, W>(c, i), w = load2<St::in1, W>(c, i);
        store2<St::dx0, W, St::acc0>(c, i, make_float2(Op::backward(g.x, x.x, w.x, r, mean),
                                                       Op::backward(g.y, x.y, w.y, r, mean)));
      }
  } else {
    static_assert(Op::form == row_form::pointwise, "run_backward_step: unknown row_form");
    for (int i = 2 * c.lane; i < W && c.active; i += 2 * c.tpr) {
      const float2 g = load2<St::dy, W>(c, i);
      const float2 a = load_or_zero<St::in0, W>(c, i), b = load_or_zero<St::in1, W>(c, i);
      float2 d0, d1;
      Op::backward(g.x, a.x, b.x, d0.x, d1.x);
      Op::backward(g.y, a.y, b.y, d0.y, d1.y);
      if constexpr (St::dx0 != none) store2<St::dx0, W, St::acc0>(c, i, d0);
      if constexpr (St::dx1 != none) store2<St::dx1, W, St::acc1>(c, i, d1);
    }
  }
}

template <class Group, class Tr, class... Steps>
__device__ __forceinline__ void run_steps(const row_ctx& c, const Group*, const Steps*...) {
  if constexpr (Group::backward) ((run_backward_step<Steps, Tr>(c), __syncthreads()), ...);
  else ((run_forward_step<Steps, Tr>(c), __syncthreads()), ...);
}

// Unpacks the step list of a row_group / row_group_bwd type.
template <class Group> struct step_list;
template <int WM, int NS, class... S> struct step_list<row_group<WM, NS, S...>> {
  template <class Tr> __device__ static void run(const row_ctx& c) {
    run_steps<row_group<WM, NS, S...>, Tr>(c, nullptr, static_cast<const S*>(nullptr)...);
  }
};
template <int WM, class... S> struct step_list<row_group_bwd<WM, S...>> {
  template <class Tr> __device__ static void run(const row_ctx& c) {
    run_steps<row_group_bwd<WM, S...>, Tr>(c, nullptr, static_cast<const S*>(nullptr)...);
  }
};

}  // namespace detail

template <class Group, class Tr = row_group_traits<Group>>
__global__ void __launch_bounds__(Tr::threads) row_group_kernel(const row_group_args a) {
  extern __shared__ float smem[];
  __shared__ float red[Tr::threads / 32];
  const int slot = static_cast<int>(threadIdx.x) / Tr::threads_per_row;
  detail::row_ctx c;
  c.a = &a;
  c.t = static_cast<std::int64_t>(blockIdx.x) * Tr::rows_per_cta + slot;
  c.lane = static_cast<int>(threadIdx.x) % Tr::threads_per_row;
  c.tpr = Tr::threads_per_row;
  c.scratch = smem + slot * Tr::smem_floats_per_row;
  c.rot = c.scratch + Group::n_scratch * Group::width_max;
  c.width_max = Group::width_max;
  c.red = red + slot * Tr::warps_per_row;
  c.active = c.t < a.tokens;
  detail::step_list<Group>::template run<Tr>(c);
}

// Launches group `Group` over a.tokens rows on `stream`. Checks the pointers
// the kernel relies on (every buffer argument set and 4-byte aligned).
template <class Group>
void launch_row_group(const row_group_args& a, cudaStream_t stream = nullptr) {
  using Tr = row_group_traits<Group>;
  for (int j = 0; j < max_buffers; ++j)
    require(reinterpret_cast<std::uintptr_t>(a.buf[j]) % 4 == 0, "row group buffer argument " + std::to_string(j) +
                                                                      " is not 4-byte aligned (bf16x2 access)");
  if (a.tokens <= 0) return;
  if constexpr (Tr::smem_bytes > 48 * 1024) {
    SG_CUDA_CHECK(cudaFuncSetAttribute(row_group_kernel<Group, Tr>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Tr::smem_bytes));
  }
  const auto blocks = static_cast<unsigned>((a.tokens + Tr::rows_per_cta - 1) / Tr::rows_per_cta);
  row_group_kernel<Group, Tr><<<blocks, Tr::threads, Tr::smem_bytes, stream>>>(a);
  SG_CUDA_CHECK(cudaGetLastError());
}

}  // namespace staticgrad::cuda
