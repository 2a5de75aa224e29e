#pragma once
// embedding<token_ids<"input_ids">, frozen_rows<"model.embed_tokens.weight", H>>:
// y[t] = table[ids[t]], y [T, H]; the table [vocab, H] is frozen, so the op
// has no backward (nothing trainable sits below it). A gather kernel.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class Ids, class Table>
struct embedding_node {
  static constexpr std::string_view op_name = "embedding";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int ids = lower_child<Ids>(t, name.view()), w = lower_child<Table>(t, name.view());
    if (!kind_is(t, op_name, name, ids, op_kind::token_ids, "token_ids<name>") ||
        !kind_is(t, op_name, name, w, op_kind::frozen_matrix, "frozen_rows<name, H>"))
      return 0;
    return t.add({.kind = op_kind::embedding, .name = name, .in = {ids, w, -1}, .n_in = 2, .width = t.nodes[w].cols});
  }
};

template <> struct op_traits<op_kind::embedding> {
  static constexpr std::string_view name = "embedding";
  static constexpr fusion_class fusion = fusion_class::anchor;
  static constexpr fusion_class bwd_fusion = fusion_class::anchor;
  static constexpr backward_reads reads{};  // no backward (the table is frozen)
  static constexpr std::array<bool, max_inputs> grad_in{};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class Ids, class Table> using embedding = graph::embedding_node<Ids, Table>;

}  // namespace staticgrad
