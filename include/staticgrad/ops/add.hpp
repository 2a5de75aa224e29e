#pragma once
// add<A, B>: y = a + b, both [T, W]. Pointwise; backward da = db = dy, which
// autodiff aliases (no kernel). add_<A, B> writes y over a's buffer.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class A, class B, bool InPlace>
struct add_node {
  static constexpr std::string_view op_name = InPlace ? "add_" : "add";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int a = lower_child<A>(t, name.view()), b = lower_child<B>(t, name.view());
    if (!same_width(t, op_name, name, a, b)) return 0;
    return t.add({.kind = op_kind::add, .name = name, .in = {a, b, -1}, .n_in = 2,
                  .width = t.nodes[a].width, .rank_width = t.nodes[a].rank_width, .inplace = InPlace});
  }
};

template <> struct op_traits<op_kind::add> {
  static constexpr std::string_view name = "add";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{};  // da = db = dy: reads nothing
  static constexpr std::array<bool, max_inputs> grad_in{true, true, false};
  static constexpr std::array<bool, max_inputs> identity_grad{true, true, false};
};
}  // namespace graph

template <class A, class B> using add = graph::add_node<A, B, false>;
// In place: y is written over a (a must not be needed afterwards).
template <class A, class B> using add_ = graph::add_node<A, B, true>;

struct add_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F forward(F a, F b) { return a + b; }
  template <class F> SG_HD static void backward(F dy, F, F, F& da, F& db) { da = db = dy; }
};
template <> struct row_op<graph::op_kind::add> : add_fn {};

}  // namespace staticgrad
