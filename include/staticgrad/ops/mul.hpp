#pragma once
// mul<A, B>: y = a * b elementwise, [T, W]. Pointwise. Backward
// da = dy * b, db = dy * a: da needs b and db needs a, so only the factors
// whose partner's gradient is computed are saved.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class A, class B>
struct mul_node {
  static constexpr std::string_view op_name = "mul";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int a = lower_child<A>(t, name.view()), b = lower_child<B>(t, name.view());
    if (!same_width(t, op_name, name, a, b)) return 0;
    return t.add({.kind = op_kind::mul, .name = name, .in = {a, b, -1}, .n_in = 2, .width = t.nodes[a].width});
  }
};

template <> struct op_traits<op_kind::mul> {
  static constexpr std::string_view name = "mul";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {false, true, false}},    // da = dy * b
                                                 reads_desc{.in = {true, false, false}}}};  // db = dy * a
  static constexpr std::array<bool, max_inputs> grad_in{true, true, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class A, class B> using mul = graph::mul_node<A, B>;

struct mul_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F forward(F a, F b) { return a * b; }
  template <class F> SG_HD static void backward(F dy, F a, F b, F& da, F& db) { da = dy * b, db = dy * a; }
};
template <> struct row_op<graph::op_kind::mul> : mul_fn {};

}  // namespace staticgrad
