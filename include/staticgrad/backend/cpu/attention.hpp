#pragma once
// Causal grouped-query attention on the CPU: the reference for the CUDA flash
// kernels and the executor of the "attention" plan group.
//
// Shapes (token-major, row-major; T = layout.tokens()):
//   q, out, dout, dq : [T, heads * head_dim]     head h occupies columns [h*d, (h+1)*d)
//   k, v, dk, dv     : [T, kv_heads * head_dim]
//   lse              : [T, heads]                log-sum-exp of the scaled scores
// Invariants:
//  - scale = 1/sqrt(head_dim); query head h reads KV head h / (heads / kv_heads)
//    (Hugging Face repeat_kv order), heads % kv_heads == 0.
//  - Causal inside a sequence of the layout, never across sequences: query i of
//    sequence [b, e) attends to keys j with b <= j <= i.
//  - Softmax and all accumulation in S (float in training runs, double in
//    gradient checks): at least fp32 as the design requires.
//  - No [T, T] matrix: per (sequence, head) one score row of length <= the
//    sequence length is live per query.
//  - lse is stored in S (not float) so the double gradient check recomputes the
//    probabilities exactly; the float path stores fp32 as the CUDA kernel does.
//  - Backward overwrites dq, dk, dv (never accumulates). dk and dv sum over the
//    query heads that share a KV head; the work is split over (sequence, KV head)
//    so no two threads write the same dk/dv row, and results are deterministic.
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/parallel.hpp"
#include "staticgrad/backend/cpu/segments.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cpu {

namespace detail {

template <class S>
using strided_mat = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                               Eigen::Unaligned, Eigen::OuterStride<>>;
template <class S>
using const_strided_mat =
    Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
               Eigen::Unaligned, Eigen::OuterStride<>>;
template <class S>
using row_vec = Eigen::Matrix<S, 1, Eigen::Dynamic>;

inline void check_attention_shape(const token_layout& layout, int heads, int kv_heads, int head_dim) {
  const error_context ctx{"", "attention", std::nullopt};
  require(heads > 0 && kv_heads > 0 && head_dim > 0,
          "heads (" + std::to_string(heads) + "), kv_heads (" + std::to_string(kv_heads) +
              ") and head_dim (" + std::to_string(head_dim) + ") must be positive",
          ctx);
  require(heads % kv_heads == 0, "heads (" + std::to_string(heads) +
                                     ") must be a multiple of kv_heads (" +
                                     std::to_string(kv_heads) + ")",
          ctx);
  validate_layout(layout);
}

}  // namespace detail

template <class S>
void attention_forward(const S* q, const S* k, const S* v, S* out, S* lse,
                       const token_layout& layout, int heads, int kv_heads, int head_dim) {
  detail::check_attention_shape(layout, heads, kv_heads, head_dim);
  const std::int64_t d = head_dim;
  const std::int64_t ldq = std::int64_t{heads} * d;     // row stride of q / out
  const std::int64_t ldk = std::int64_t{kv_heads} * d;  // row stride of k / v
  const int group = heads / kv_heads;
  const S scale = S(1) / std::sqrt(static_cast<S>(head_dim));
  const std::int64_t nseq = layout.sequences();
  const double avg_len = static_cast<double>(layout.tokens()) / static_cast<double>(nseq);

  // One task per (sequence, query head): each writes its own out/lse columns.
  parallel_for(nseq * heads, 2.0 * avg_len * avg_len * static_cast<double>(d), [&](std::int64_t task) {
    const std::int64_t s = task / heads;
    const int h = static_cast<int>(task % heads);
    const int g = h / group;
    const std::int64_t b = layout.begin(s), L = layout.end(s) - b;
    detail::const_strided_mat<S> Q(q + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
    detail::const_strided_mat<S> K(k + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    detail::const_strided_mat<S> V(v + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    detail::strided_mat<S> O(out + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
    detail::row_vec<S> p(L);  // score row of the current query, length <= L
    for (std::int64_t i = 0; i < L; ++i) {
      const std::int64_t n = i + 1;  // causal: keys 0..i of this sequence
      p.head(n).noalias() = (K.topRows(n) * Q.row(i).transpose()).transpose() * scale;
      const S m = p.head(n).maxCoeff();  // max-subtract: exp never overflows
      p.head(n) = (p.head(n).array() - m).exp();
      const S sum = p.head(n).sum();  // >= 1 (the max term is exp(0))
      O.row(i).noalias() = (p.head(n) * V.topRows(n)) / sum;
      lse[(b + i) * heads + h] = m + std::log(sum);
    }
  });
}

template <class S>
void attention_backward(const S* q, const S* k, const S* v, const S* out, const S* lse,
                        const S* dout, S* dq, S* dk, S* dv, const token_layout& layout, int heads,
                        int kv_heads, int head_dim) {
  detail::check_attention_shape(layout, heads, kv_heads, head_dim);
  const std::int64_t d = head_dim;
  const std::int64_t ldq = std::int64_t{heads} * d;
  const std::int64_t ldk = std::int64_t{kv_heads} * d;
  const int group = heads / kv_heads;
  const S scale = S(1) / std::sqrt(static_cast<S>(head_dim));
  const std::int64_t nseq = layout.sequences();
  const double avg_len = static_cast<double>(layout.tokens()) / static_cast<double>(nseq);

  // One task per (sequence, KV head): it owns the dk/dv rows of that KV head
  // in that sequence and the dq columns of the `group` query heads reading it.
  parallel_for(nseq * kv_heads, 4.0 * group * avg_len * avg_len * static_cast<double>(d),
               [&](std::int64_t task) {
    const std::int64_t s = task / kv_heads;
    const int g = static_cast<int>(task % kv_heads);
    const std::int64_t b = layout.begin(s), L = layout.end(s) - b;
    detail::const_strided_mat<S> K(k + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    detail::const_strided_mat<S> V(v + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    detail::strided_mat<S> dK(dk + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    detail::strided_mat<S> dV(dv + b * ldk + g * d, L, d, Eigen::OuterStride<>(ldk));
    dK.setZero();
    dV.setZero();
    detail::row_vec<S> p(L), dp(L);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      detail::const_strided_mat<S> Q(q + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::const_strided_mat<S> O(out + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::const_strided_mat<S> dO(dout + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::strided_mat<S> dQ(dq + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      for (std::int64_t i = 0; i < L; ++i) {
        const std::int64_t n = i + 1;
        // P_ij = exp(scale q_i.k_j - lse_i), recomputed instead of saved.
        const S l = lse[(b + i) * heads + h];
        p.head(n).noalias() = (K.topRows(n) * Q.row(i).transpose()).transpose() * scale;
        p.head(n) = (p.head(n).array() - l).exp();
        // dV_j += P_ij dO_i
        dV.topRows(n).noalias() += p.head(n).transpose() * dO.row(i);
        // dP_ij = dO_i . V_j;  dS_ij = P_ij (dP_ij - D_i),  D_i = dO_i . O_i
        const S D = dO.row(i).dot(O.row(i));
        dp.head(n).noalias() = (V.topRows(n) * dO.row(i).transpose()).transpose();
        dp.head(n) = (p.head(n).array() * (dp.head(n).array() - D)) * scale;  // scale folded in
        // dQ_i = scale sum_j dS_ij K_j ; dK_j += scale dS_ij Q_i
        dQ.row(i).noalias() = dp.head(n) * K.topRows(n);
        dK.topRows(n).noalias() += dp.head(n).transpose() * Q.row(i);
      }
    }
  });
}

}  // namespace staticgrad::cpu
