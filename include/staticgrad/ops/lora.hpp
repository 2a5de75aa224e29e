#pragma once
// lora<X, lora_params<"q_proj", Out, In>>: the LoRA update of one projection,
//   y = s * (dropout(x) A^T) B^T,  A [r, In], B [Out, r] trainable (f32),
// s = alpha / r (or alpha / sqrt(r), rsLoRA) from runtime_config. The rank r
// is a runtime value. The aux output Z = dropout(x) A^T [T, r] is saved for dB.
// Backward (dy [T, Out]):
//   dB = s dy^T Z,  dZ = s dy B,  dA = dZ^T dropout(x),  dx += mask * (dZ A).
// dx reads no forward value (dZ comes from dy and B); dA reads x and dB reads
// Z, and every lora step computes dA and dB, so x and Z are always saved.
// The dropout mask is not saved: it is a hash of (seed, layer, adapter,
// token, feature), recomputed in backward.
//
// Written next to a linear of the same input, add<linear<X, W>, lora<X, P>>
// fuses into one GEMM: Y = [X | s Z] [W | B]^T (fusion.hpp).
#include <cstdint>

#include "staticgrad/ops/lora_dropout.hpp"
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class P>
struct lora_node {
  static constexpr std::string_view op_name = "lora";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), p = lower_child<P>(t, name.view());
    if (!kind_is(t, op_name, name, p, op_kind::lora_adapter, "lora_params<name, Out, In>") ||
        !fits_operand(t, op_name, name, p, x))
      return 0;
    return t.add({.kind = op_kind::lora, .name = name, .in = {x, p, -1}, .n_in = 2, .width = t.nodes[p].width,
                  .aux_width = 1, .aux_rank = true, .aux_store = storage::act});
  }
};

template <> struct op_traits<op_kind::lora> {
  static constexpr std::string_view name = "lora";
  static constexpr fusion_class fusion = fusion_class::gemm;
  static constexpr fusion_class bwd_fusion = fusion_class::gemm;
  static constexpr backward_reads reads{.always = {.in = {true, false, false}, .aux = true}};  // dA: x; dB: Z
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class P> using lora = graph::lora_node<X, P>;

}  // namespace staticgrad
