#pragma once
// rope<X, HeadDim>: rotary position embedding, Hugging Face half-split form.
// x [T, heads * d]; for each head and i < d/2, with f_i = pos * theta^(-2i/d):
//   y_i       = x_i c - x_{i+d/2} s,   y_{i+d/2} = x_{i+d/2} c + x_i s
// (c = cos f_i, s = sin f_i, computed in f32 as HF does). Pair-local: element
// i needs only i +- d/2. Saves nothing (positions are side input); backward
// is the inverse rotation. rope_<X, HeadDim> rotates in place.
#include <cmath>

#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, int HeadDim, bool InPlace>
struct rope_node {
  static_assert(HeadDim > 0 && HeadDim % 2 == 0, "rope<X, HeadDim>: the head dimension must be even (halves are rotated)");
  static constexpr std::string_view op_name = InPlace ? "rope_" : "rope";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view());
    if (!width_is(t, op_name, name, x, HeadDim, true)) return 0;
    return t.add({.kind = op_kind::rope, .name = name, .in = {x, -1, -1}, .n_in = 1,
                  .width = t.nodes[x].width, .inplace = InPlace, .attr = {HeadDim, 0, 0, 0}});
  }
};

template <> struct op_traits<op_kind::rope> {
  static constexpr std::string_view name = "rope";
  static constexpr fusion_class fusion = fusion_class::row;
  static constexpr fusion_class bwd_fusion = fusion_class::row;
  static constexpr backward_reads reads{};  // dx: the inverse rotation of dy
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, int HeadDim> using rope = graph::rope_node<X, HeadDim, false>;
template <class X, int HeadDim> using rope_ = graph::rope_node<X, HeadDim, true>;

struct rope_fn {
  static constexpr row_form form = row_form::rotary;
  // Angle of pair i of a head of dimension d at position pos, in f32 like HF:
  // inv_freq = 1 / theta^(2i/d), freq = pos * inv_freq.
  SG_HD static float angle(int pos, int i, int d, float theta) {
    const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(d));
    return static_cast<float>(pos) * inv_freq;
  }
  template <class F> SG_HD static void forward(F x1, F x2, F c, F s, F& y1, F& y2) {
    y1 = x1 * c - x2 * s;
    y2 = x2 * c + x1 * s;
  }
  template <class F> SG_HD static void backward(F dy1, F dy2, F c, F s, F& dx1, F& dx2) {
    dx1 = dy1 * c + dy2 * s;
    dx2 = dy2 * c - dy1 * s;
  }
};
template <> struct row_op<graph::op_kind::rope> : rope_fn {};

}  // namespace staticgrad
