#pragma once
// lm_head_cross_entropy<X, frozen_rows<"lm_head.weight", H>, token_ids<"targets">>:
// the per-token cross-entropy of the logits x W^T (f32) against targets, where
// targets[t] is the label token t predicts (labels shifted by one inside each
// sequence) or -100 (ignored: loss 0, not counted). y [T, 1] (f32).
// The loss of a batch is the mean over counted tokens: the executor sums y
// and seeds the backward with 1 / counted for every counted token.
// The LM head and the cross-entropy are one op so that the [T, vocab] logits
// are never materialised: kernels walk the tokens in chunks. Saves x.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class W, class Targets>
struct lm_head_ce_node {
  static constexpr std::string_view op_name = "lm_head_cross_entropy";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), w = lower_child<W>(t, name.view()),
              y = lower_child<Targets>(t, name.view());
    if (!kind_is(t, op_name, name, w, op_kind::frozen_matrix, "frozen_rows<name, H>") ||
        !fits_operand(t, op_name, name, w, x) || !kind_is(t, op_name, name, y, op_kind::token_ids, "token_ids<name>"))
      return 0;
    return t.add({.kind = op_kind::lm_head_ce, .name = name, .in = {x, w, y}, .n_in = 3, .width = 1,
                  .store = storage::stat});
  }
};

template <> struct op_traits<op_kind::lm_head_ce> {
  static constexpr std::string_view name = "lm_head_cross_entropy";
  static constexpr fusion_class fusion = fusion_class::anchor;
  static constexpr fusion_class bwd_fusion = fusion_class::anchor;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {true, false, true}}}};  // dx: x, targets
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class W, class Targets> using lm_head_cross_entropy = graph::lm_head_ce_node<X, W, Targets>;

}  // namespace staticgrad
