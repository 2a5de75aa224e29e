#pragma once
// attention<Q, K, V, Heads, KvHeads, HeadDim>: causal grouped-query attention
// over packed sequences (attention never crosses a sequence start).
//   q [T, Heads*HeadDim], k and v [T, KvHeads*HeadDim], y [T, Heads*HeadDim];
//   query head j reads KV head j / (Heads / KvHeads); scale 1/sqrt(HeadDim);
//   softmax in f32. The aux output is the log-sum-exp per query row and head
//   ([T, Heads], f32), so backward recomputes probabilities without storing
//   them (flash-attention style). Backward: P = exp(s q k^T - lse) needs q, k
//   and the log-sum-exp; dv = P^T dy needs only those; dq and dk also need v
//   (dP = dy v^T) and y (D = rowsum(dy * y)).
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class Q, class K, class V, int Heads, int KvHeads, int HeadDim>
struct attention_node {
  static_assert(Heads > 0 && KvHeads > 0 && HeadDim > 0, "attention<...>: heads, KV heads and head dim must be positive");
  static_assert(Heads % KvHeads == 0, "attention<...>: Heads must be a multiple of KvHeads (grouped-query attention)");
  static constexpr std::string_view op_name = "attention";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int q = lower_child<Q>(t, name.view()), k = lower_child<K>(t, name.view()), v = lower_child<V>(t, name.view());
    if (!width_is(t, op_name, name, q, Heads * HeadDim) || !width_is(t, op_name, name, k, KvHeads * HeadDim) ||
        !width_is(t, op_name, name, v, KvHeads * HeadDim))
      return 0;
    return t.add({.kind = op_kind::attention, .name = name, .in = {q, k, v}, .n_in = 3, .width = Heads * HeadDim,
                  .attr = {Heads, KvHeads, HeadDim, 0}, .aux_width = Heads, .aux_store = storage::stat});
  }
};

template <> struct op_traits<op_kind::attention> {
  static constexpr std::string_view name = "attention";
  static constexpr fusion_class fusion = fusion_class::anchor;
  static constexpr fusion_class bwd_fusion = fusion_class::anchor;
  static constexpr reads_desc all{.in = {true, true, true}, .out = true, .aux = true};
  static constexpr backward_reads reads{.grad = {all, all, reads_desc{.in = {true, true, false}, .aux = true}}};  // dq, dk, dv
  static constexpr std::array<bool, max_inputs> grad_in{true, true, true};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class Q, class K, class V, int Heads, int KvHeads, int HeadDim>
using attention = graph::attention_node<Q, K, V, Heads, KvHeads, HeadDim>;

}  // namespace staticgrad
