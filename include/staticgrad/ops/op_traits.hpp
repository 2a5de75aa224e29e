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

// Arguments of a row functor: one token t of every input.
template <class S>
struct row_args {
  std::array<const S*, graph::max_inputs> in{};  // activation rows at t; whole vector for vec<> inputs
  S* out = nullptr;                               // output row at t
  S* aux = nullptr;                               // auxiliary row at t (stats), if the op has one
  int width = 0;                                  // output width
  std::int64_t t = 0;                             // token index
  std::int32_t pos = 0;                           // RoPE position of token t
  const graph::node_desc* node = nullptr;
  const runtime_config* cfg = nullptr;
};

// Backward of a row functor: forward rows as in row_args (read-only; `out`
// and `aux` hold the saved forward output and stats), plus the output
// gradient and one gradient row per input (written, or added to when acc[k]).
template <class S>
struct row_grad_args {
  row_args<S> fwd;
  const S* dy = nullptr;
  std::array<S*, graph::max_inputs> din{};
  std::array<bool, graph::max_inputs> acc{};
};

// Writes or accumulates one gradient element.
template <class S>
SG_HD void put_grad(S* d, int i, S v, bool acc) {
  if (acc) d[i] += v;
  else d[i] = v;
}

}  // namespace staticgrad
