#pragma once
// The contract every op header fulfils (ops/<op>.hpp):
//
//   1. a DSL node template (e.g. rmsnorm<X, W>) whose `lower` adds a node_desc
//      with its static shape checks;
//   2. `op_traits<op_kind::K>`: its name, how it fuses (forward and backward),
//      which of its inputs / output / auxiliary output backward reads (the
//      saved set is the union of these over the graph), which inputs receive
//      gradients and whether that gradient is the output gradient unchanged
//      (then autodiff aliases it instead of running a kernel);
//   3. for pointwise and row ops, `row_forward` / `row_backward` functors over
//      one token's row, used by the CPU fused loops (backend/cpu) and built on
//      element functors that the CUDA fused kernels (backend/cuda) share.
#include <array>
#include <cstdint>
#include <string_view>

#include "staticgrad/core/macros.hpp"
#include "staticgrad/graph/dsl.hpp"
#include "staticgrad/graph/node.hpp"

namespace staticgrad {

// Runtime scalars of a block (they come from config.json and the adapter).
struct runtime_config {
  float eps = 1e-6f;            // RMSNorm epsilon (rms_norm_eps)
  float rope_theta = 1e6f;      // RoPE base (rope_theta)
  float lora_scaling = 1.0f;    // alpha / r, or alpha / sqrt(r) with rsLoRA
  float lora_dropout = 0.0f;    // dropout probability on the LoRA input
  std::uint64_t seed = 0;       // dropout mask seed (with layer and step)
  int layer = 0;                // layer index, mixed into the dropout stream
  int rank = 0;                 // LoRA rank r
};

namespace graph {

struct saves_desc {
  std::array<bool, max_inputs> in{};  // backward reads input k
  bool out = false;                   // backward reads the output
  bool aux = false;                   // backward reads the auxiliary output
};

template <op_kind K>
struct op_traits {
  static_assert(always_false<op_traits>, "op_traits<K> is not specialised: include the op's header from ops/");
};

// Leaves: no compute, no backward of their own.
struct leaf_traits {
  static constexpr fusion_class fusion = fusion_class::leaf;
  static constexpr fusion_class bwd_fusion = fusion_class::leaf;
  static constexpr saves_desc saves{};
  static constexpr std::array<bool, max_inputs> grad_in{};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
template <> struct op_traits<op_kind::input> : leaf_traits { static constexpr std::string_view name = "input"; };
template <> struct op_traits<op_kind::token_ids> : leaf_traits { static constexpr std::string_view name = "token_ids"; };
template <> struct op_traits<op_kind::frozen_matrix> : leaf_traits { static constexpr std::string_view name = "frozen"; };
template <> struct op_traits<op_kind::frozen_vector> : leaf_traits { static constexpr std::string_view name = "vec"; };
template <> struct op_traits<op_kind::lora_adapter> : leaf_traits { static constexpr std::string_view name = "lora_params"; };

}  // namespace graph

// The math of a row op, written once (in its op header) and run by both row
// executors (backend/cpu/row_group.hpp over one token row, backend/cuda/row_group.cuh
// with bf16x2 loads and block reductions). Its shape decides how the
// executors walk a row:
//   pointwise  y_i = forward(a_i, b_i);  backward(dy_i, a_i, b_i, da_i, db_i)
//              (unary ops ignore b; b may be a parameter vector)
//   rotary     pairs (i, i + d/2) of every head of dimension d = the step's attr,
//              rotated by (c, s) = (cos, sin) of angle(pos, i, d, theta), computed
//              once per position and i: forward/backward(x1, x2, c, s, y1, y2)
//   norm       r = inv_rms(sum_i a_i^2, width, eps) (stored as the aux statistic);
//              y_i = forward(a_i, r, b_i); backward with mean = sum_i dot_term / width
enum class row_form : std::uint8_t { pointwise, rotary, norm };

// Registration of a row op's functor: one line per op header,
//   template <> struct row_op<graph::op_kind::silu> : silu_fn {};
// where the functor declares `static constexpr row_form form`.
template <graph::op_kind K>
struct row_op {
  static constexpr bool registered = false;
};
template <graph::op_kind K>
inline constexpr bool is_row_op = !requires { row_op<K>::registered; };

// Writes or accumulates one gradient element.
template <class S>
SG_HD void put_grad(S* d, int i, S v, bool acc) {
  if (acc) d[i] += v;
  else d[i] = v;
}

}  // namespace staticgrad
