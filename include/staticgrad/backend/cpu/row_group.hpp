#pragma once
// The CPU row executor: one step of a row group (graph::row_step) on one
// token's row, for any registered row op (ops/*.hpp: row_op<kind>, whose
// `form` says how the row is walked). The CUDA row-group kernel
// (backend/cuda/row_group.cuh) walks rows the same way with the same functors.
//
// Pointers are the rows of token t: a, b the forward inputs (b may be a
// parameter vector, or null), y the output, aux the statistic (norm: one
// value), dy the output gradient, da, db the input gradients (null: not
// wanted; written, or added to with acc). In place (y == a) is safe: every
// form reads an element (pair) before it writes it.
#include <cmath>
#include <cstdint>

#include "staticgrad/graph/schedule.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::cpu {

template <graph::op_kind K, class S>
void row_forward(const graph::row_step& st, const S* a, const S* b, S* y, S* aux, std::int32_t pos,
                 const runtime_config& cfg) {
  static_assert(is_row_op<K>, "a row group holds an op without a registered row functor (row_op<kind> in its header)");
  using Op = row_op<K>;
  const int w = st.width;
  if constexpr (Op::form == row_form::pointwise) {
    for (int i = 0; i < w; ++i) y[i] = Op::forward(a[i], b ? b[i] : S(0));
  } else if constexpr (Op::form == row_form::rotary) {
    const int d = st.attr, half = d / 2;
    for (int i = 0; i < half; ++i) {
      const float ang = Op::angle(pos, i, d, cfg.rope_theta);
      const S c = static_cast<S>(std::cos(ang)), s = static_cast<S>(std::sin(ang));
      for (int h = 0; h < w; h += d) {
        S y1, y2;  // temporaries: in place (y == a) stays correct
        Op::forward(a[h + i], a[h + i + half], c, s, y1, y2);
        y[h + i] = y1;
        y[h + i + half] = y2;
      }
    }
  } else {
    static_assert(Op::form == row_form::norm, "row_forward: unknown row_form");
    S ss = 0;
    for (int i = 0; i < w; ++i) ss += a[i] * a[i];
    const S r = Op::inv_rms(ss, w, S(cfg.eps));
    if (aux) aux[0] = r;
    for (int i = 0; i < w; ++i) y[i] = Op::forward(a[i], r, b[i]);
  }
}

template <graph::op_kind K, class S>
void row_backward(const graph::row_step& st, const S* a, const S* b, const S* aux, const S* dy, S* da, S* db,
                  std::int32_t pos, const runtime_config& cfg) {
  static_assert(is_row_op<K>, "a backward row group holds an op without a registered row functor");
  using Op = row_op<K>;
  const int w = st.width;
  if constexpr (Op::form == row_form::pointwise) {
    for (int i = 0; i < w; ++i) {
      S ga, gb;
      Op::backward(dy[i], a ? a[i] : S(0), b ? b[i] : S(0), ga, gb);
      if (da) put_grad(da, i, ga, st.acc0);
      if (db) put_grad(db, i, gb, st.acc1);
    }
  } else if constexpr (Op::form == row_form::rotary) {
    if (!da) return;
    const int d = st.attr, half = d / 2;
    for (int i = 0; i < half; ++i) {
      const float ang = Op::angle(pos, i, d, cfg.rope_theta);
      const S c = static_cast<S>(std::cos(ang)), s = static_cast<S>(std::sin(ang));
      for (int h = 0; h < w; h += d) {
        S d1, d2;
        Op::backward(dy[h + i], dy[h + i + half], c, s, d1, d2);
        put_grad(da, h + i, d1, st.acc0);
        put_grad(da, h + i + half, d2, st.acc0);
      }
    }
  } else {
    static_assert(Op::form == row_form::norm, "row_backward: unknown row_form");
    const S r = aux[0];
    S dot = 0;  // sum(g * n) with g = dy * w, n = x * r
    for (int i = 0; i < w; ++i) dot += Op::dot_term(dy[i], a[i], b[i], r);
    const S mean = dot / S(w);
    if (da)
      for (int i = 0; i < w; ++i) put_grad(da, i, Op::backward(dy[i], a[i], b[i], r, mean), st.acc0);
  }
}

}  // namespace staticgrad::cpu
