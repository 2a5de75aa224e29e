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
//  - No [T, T] matrix: per (sequence, head) one score tile of
//    [query_block, sequence length] is live at a time.
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

// Queries are processed in blocks of query_block rows, so the score tile of a
// (sequence, head) is [query_block, keys so far]: small products become GEMMs
// while memory stays O(query_block x sequence length), never [T, T]. 64 rows
// x 64 head_dim keeps a Q block in L1; the value does not affect results
// beyond summation order.
inline constexpr std::int64_t query_block = 64;

namespace detail {
template <class S>
using tile = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
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
  const S neg_inf = -std::numeric_limits<S>::infinity();
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
    detail::tile<S> P(std::min(query_block, L), L);  // score tile, rows <= query_block
    for (std::int64_t i0 = 0; i0 < L; i0 += query_block) {
      const std::int64_t nb = std::min(query_block, L - i0);
      const std::int64_t n = i0 + nb;  // keys any query of the block may see
      auto Pb = P.topLeftCorner(nb, n);
      Pb.noalias() = (Q.middleRows(i0, nb) * K.topRows(n).transpose()) * scale;
      for (std::int64_t r = 0; r < nb; ++r) {
        const std::int64_t len = i0 + r + 1;  // causal: keys 0 .. i0 + r
        auto row = Pb.row(r);
        row.tail(n - len).setConstant(neg_inf);  // exp(-inf) = 0 below
        const S m = row.head(len).maxCoeff();    // max-subtract: exp never overflows
        row = (row.array() - m).exp();
        const S sum = row.head(len).sum();       // >= 1 (the max term is exp(0))
        row /= sum;
        lse[(b + i0 + r) * heads + h] = m + std::log(sum);
      }
      O.middleRows(i0, nb).noalias() = Pb * V.topRows(n);
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
    const std::int64_t rows = std::min(query_block, L);
    detail::tile<S> P(rows, L), dP(rows, L);
    Eigen::Matrix<S, Eigen::Dynamic, 1> Dvec(rows);
    for (int h = g * group; h < (g + 1) * group; ++h) {
      detail::const_strided_mat<S> Q(q + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::const_strided_mat<S> O(out + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::const_strided_mat<S> dO(dout + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      detail::strided_mat<S> dQ(dq + b * ldq + h * d, L, d, Eigen::OuterStride<>(ldq));
      for (std::int64_t i0 = 0; i0 < L; i0 += query_block) {
        const std::int64_t nb = std::min(query_block, L - i0);
        const std::int64_t n = i0 + nb;
        auto Qb = Q.middleRows(i0, nb);
        auto dOb = dO.middleRows(i0, nb);
        // P_ij = exp(scale q_i.k_j - lse_i) for j <= i, else 0: recomputed, not saved.
        auto Pb = P.topLeftCorner(nb, n);
        Pb.noalias() = (Qb * K.topRows(n).transpose()) * scale;
        for (std::int64_t r = 0; r < nb; ++r) {
          const std::int64_t len = i0 + r + 1;
          const S l = lse[(b + i0 + r) * heads + h];
          Pb.row(r).head(len) = (Pb.row(r).head(len).array() - l).exp();
          Pb.row(r).tail(n - len).setZero();
          Dvec(r) = dOb.row(r).dot(O.row(i0 + r));  // D_i = dO_i . O_i
        }
        // dV += P^T dO
        dV.topRows(n).noalias() += Pb.transpose() * dOb;
        // dP = dO V^T; dS = P (dP - D), with the score scale folded in
        auto dSb = dP.topLeftCorner(nb, n);
        dSb.noalias() = dOb * V.topRows(n).transpose();
        dSb = (Pb.array() * (dSb.array().colwise() - Dvec.head(nb).array())) * scale;
        // dQ = dS K ; dK += dS^T Q
        dQ.middleRows(i0, nb).noalias() = dSb * K.topRows(n);
        dK.topRows(n).noalias() += dSb.transpose() * Qb;
      }
    }
  });
}

}  // namespace staticgrad::cpu
