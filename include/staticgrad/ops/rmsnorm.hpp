#pragma once
// rmsnorm<X, vec<"w", W>>: y = w * (x * r), r = rsqrt(mean(x^2) + eps), as
// Hugging Face Qwen2RMSNorm (statistics in f32). x [T, W], w [W] frozen.
// A row op (one reduction per token). Saves x and r (the aux output, one f32
// per token); backward: with n = x r and g = dy * w,
//   dx = r * (g - n * mean(g * n)).
#include <cmath>

#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class W>
struct rmsnorm_node {
  static constexpr std::string_view op_name = "rmsnorm";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), w = lower_child<W>(t, name.view());
    if (!kind_is(t, op_name, name, w, op_kind::frozen_vector, "vec<name, W>") || !fits_operand(t, op_name, name, w, x))
      return 0;
    return t.add({.kind = op_kind::rmsnorm, .name = name, .in = {x, w, -1}, .n_in = 2,
                  .width = t.nodes[x].width, .aux_width = 1, .aux_store = storage::stat});
  }
};

template <> struct op_traits<op_kind::rmsnorm> {
  static constexpr std::string_view name = "rmsnorm";
  static constexpr fusion_class fusion = fusion_class::row;
  static constexpr fusion_class bwd_fusion = fusion_class::row;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {true, false, false}, .aux = true}}};  // dx: x, 1/rms
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class W> using rmsnorm = graph::rmsnorm_node<X, W>;

// The element math of rmsnorm, shared by the CPU row functors and the CUDA
// row-group kernel (which supplies its own block reductions of the sums).
struct rmsnorm_fn {
  static constexpr row_form form = row_form::norm;
  // r = 1 / sqrt(mean(x^2) + eps) from ss = sum(x^2) over n elements.
  template <class F> SG_HD static F inv_rms(F ss, int n, F eps) {
#if defined(__CUDA_ARCH__)
    return F(1) / ::sqrtf(ss / F(n) + eps);
#else
    return F(1) / std::sqrt(ss / F(n) + eps);
#endif
  }
  template <class F> SG_HD static F forward(F x, F r, F w) { return w * (x * r); }
  // The term of sum(g * n) for one element, g = dy * w, n = x * r.
  template <class F> SG_HD static F dot_term(F dy, F x, F w, F r) { return dy * w * x * r; }
  // dx for one element given mean = sum(g * n) / width.
  template <class F> SG_HD static F backward(F dy, F x, F w, F r, F mean) { return r * (dy * w - x * r * mean); }
};
template <> struct row_op<graph::op_kind::rmsnorm> : rmsnorm_fn {};

}  // namespace staticgrad
