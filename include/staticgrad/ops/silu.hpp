#pragma once
// silu<X>: y = x * sigmoid(x). Pointwise. Saves x (the derivative needs the
// pre-activation). silu_<X> writes y over x: valid only where nothing needs
// x afterwards, which is never the case when x requires a gradient, since
// silu's own backward saves x; the in-place check rejects that at compile time.
#include "staticgrad/ops/op_traits.hpp"
#include "staticgrad/ops/swiglu.hpp"

namespace staticgrad {
namespace graph {

template <class X, bool InPlace>
struct silu_node {
  static constexpr std::string_view op_name = InPlace ? "silu_" : "silu";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view());
    return t.add({.kind = op_kind::silu, .name = name, .in = {x, -1, -1}, .n_in = 1,
                  .width = t.nodes[x].width, .rank_width = t.nodes[x].rank_width, .inplace = InPlace});
  }
};

template <> struct op_traits<op_kind::silu> {
  static constexpr std::string_view name = "silu";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {true, false, false}}}};  // dx needs x
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X> using silu = graph::silu_node<X, false>;
template <class X> using silu_ = graph::silu_node<X, true>;

struct silu_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F forward(F x, F = F(0)) { return x * swiglu_fn::sigmoid(x); }
  template <class F> SG_HD static void backward(F dy, F x, F, F& dx, F& unused) {
    const F s = swiglu_fn::sigmoid(x);
    dx = dy * s * (F(1) + x * (F(1) - s));
    unused = F(0);
  }
};
template <> struct row_op<graph::op_kind::silu> : silu_fn {};

}  // namespace staticgrad
