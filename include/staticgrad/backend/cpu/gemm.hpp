#pragma once
// Thin Eigen wrappers for the matrix products of linear and LoRA on the CPU.
//
// Conventions (BLAS-like, but row-major):
//  - Every operand is a row-major [rows, cols] block addressed by a pointer and
//    a leading dimension ld (elements between consecutive rows, ld >= cols).
//    A caller can therefore address column blocks of a wider buffer, e.g. the
//    [X | s*XA] activations laid side by side for Y = [X | s*XA] [W | B]^T.
//  - Weights are [out, in] as in PyTorch, so y = x W^T is matmul_nt.
//  - C = alpha * op(A) op(B) + beta * C. With beta == 0, C is overwritten and
//    its previous contents (even NaN) are never read, as in BLAS.
//  - M, N, K may be zero (nothing to multiply); with K == 0 C becomes beta * C.
//  - C must not overlap A or B.
//  - S is float or double; products accumulate in S.
//  - bf16 weights (frozen base weights are stored bf16): overloads taking B as
//    staticgrad::bf16 convert B to S one panel of at most bf16_panel rows at a
//    time into a scratch buffer, then call the S product. Conversion is exact
//    (bf16 -> float is a bit shift), so these equal the S product on the
//    widened weight up to summation order (matmul_nn splits K into panels);
//    the scratch stays small (panel x cols), never a full copy of the weight.
//    Activations (A) are always S: the caller widens bf16 activations.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "staticgrad/core/dtype.hpp"
#include "staticgrad/core/error.hpp"

namespace staticgrad::cpu {

using index_t = std::int64_t;

namespace detail {

template <class S>
using gemm_map = Eigen::Map<Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                            Eigen::Unaligned, Eigen::OuterStride<>>;
template <class S>
using gemm_cmap = Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>,
                             Eigen::Unaligned, Eigen::OuterStride<>>;

inline void check_gemm(const char* name, index_t M, index_t N, index_t K, index_t lda,
                       index_t a_cols, index_t ldb, index_t b_cols, index_t ldc) {
  const error_context ctx{"", name, std::nullopt};
  require(M >= 0 && N >= 0 && K >= 0, "negative matrix size", ctx);
  require(lda >= std::max<index_t>(a_cols, 1) && ldb >= std::max<index_t>(b_cols, 1) &&
              ldc >= std::max<index_t>(N, 1),
          "leading dimension smaller than the row length (lda " + std::to_string(lda) + ", ldb " +
              std::to_string(ldb) + ", ldc " + std::to_string(ldc) + ")",
          ctx);
}

// C = alpha * P + beta * C for a product expression P, honouring beta == 0.
template <class S, class Prod>
void store(gemm_map<S>& C, const Prod& P, S alpha, S beta) {
  if (beta == S(0)) C.noalias() = alpha * P;
  else {
    if (beta != S(1)) C *= beta;
    C.noalias() += alpha * P;
  }
}

// Rows of a bf16 matrix widened to S.
template <class S>
void widen_rows(const bf16* src, index_t ld, index_t rows, index_t cols, S* dst) {
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      dst[r * cols + c] = static_cast<S>(static_cast<float>(src[r * ld + c]));
}

// Rows of a bf16 weight converted per panel: bounded scratch (panel x cols).
inline constexpr index_t bf16_panel = 256;

}  // namespace detail

// C[M, N] = alpha * A[M, K] * B[N, K]^T + beta * C      (y = x W^T)
template <class S>
void matmul_nt(index_t M, index_t N, index_t K, const S* A, index_t lda, const S* B, index_t ldb,
               S* C, index_t ldc, S alpha = S(1), S beta = S(0)) {
  detail::check_gemm("matmul_nt", M, N, K, lda, K, ldb, K, ldc);
  if (M == 0 || N == 0) return;
  detail::gemm_map<S> c(C, M, N, Eigen::OuterStride<>(ldc));
  detail::gemm_cmap<S> a(A, M, K, Eigen::OuterStride<>(lda));
  detail::gemm_cmap<S> b(B, N, K, Eigen::OuterStride<>(ldb));
  detail::store(c, a * b.transpose(), alpha, beta);
}

// C[M, N] = alpha * A[M, K] * B[K, N] + beta * C        (dx = dy W)
template <class S>
void matmul_nn(index_t M, index_t N, index_t K, const S* A, index_t lda, const S* B, index_t ldb,
               S* C, index_t ldc, S alpha = S(1), S beta = S(0)) {
  detail::check_gemm("matmul_nn", M, N, K, lda, K, ldb, N, ldc);
  if (M == 0 || N == 0) return;
  detail::gemm_map<S> c(C, M, N, Eigen::OuterStride<>(ldc));
  detail::gemm_cmap<S> a(A, M, K, Eigen::OuterStride<>(lda));
  detail::gemm_cmap<S> b(B, K, N, Eigen::OuterStride<>(ldb));
  detail::store(c, a * b, alpha, beta);
}

// C[M, N] = alpha * A[K, M]^T * B[K, N] + beta * C      (dW = dy^T x, K = tokens)
template <class S>
void matmul_tn(index_t M, index_t N, index_t K, const S* A, index_t lda, const S* B, index_t ldb,
               S* C, index_t ldc, S alpha = S(1), S beta = S(0)) {
  detail::check_gemm("matmul_tn", M, N, K, lda, M, ldb, N, ldc);
  if (M == 0 || N == 0) return;
  detail::gemm_map<S> c(C, M, N, Eigen::OuterStride<>(ldc));
  detail::gemm_cmap<S> a(A, K, M, Eigen::OuterStride<>(lda));
  detail::gemm_cmap<S> b(B, K, N, Eigen::OuterStride<>(ldb));
  detail::store(c, a.transpose() * b, alpha, beta);
}

// bf16 weight B[N, K]: C[M, N] = alpha * A B^T + beta * C, B widened per panel
// of output columns.
template <class S>
void matmul_nt(index_t M, index_t N, index_t K, const S* A, index_t lda, const bf16* B,
               index_t ldb, S* C, index_t ldc, S alpha = S(1), S beta = S(0)) {
  detail::check_gemm("matmul_nt(bf16)", M, N, K, lda, K, ldb, K, ldc);
  if (M == 0 || N == 0) return;
  std::vector<S> panel(static_cast<std::size_t>(std::min(N, detail::bf16_panel) * K));
  for (index_t n0 = 0; n0 < N; n0 += detail::bf16_panel) {
    const index_t nb = std::min(detail::bf16_panel, N - n0);
    detail::widen_rows(B + n0 * ldb, ldb, nb, K, panel.data());
    matmul_nt<S>(M, nb, K, A, lda, panel.data(), std::max<index_t>(K, 1), C + n0, ldc, alpha, beta);
  }
}

// bf16 weight B[K, N]: C[M, N] = alpha * A B + beta * C, B widened per panel of
// the reduction dimension; beta applies with the first panel only.
template <class S>
void matmul_nn(index_t M, index_t N, index_t K, const S* A, index_t lda, const bf16* B,
               index_t ldb, S* C, index_t ldc, S alpha = S(1), S beta = S(0)) {
  detail::check_gemm("matmul_nn(bf16)", M, N, K, lda, K, ldb, N, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // no panel to carry beta: apply it directly
    matmul_nn<S>(M, N, 0, A, lda, static_cast<const S*>(nullptr), std::max<index_t>(N, 1), C, ldc,
                 alpha, beta);
    return;
  }
  std::vector<S> panel(static_cast<std::size_t>(std::min(K, detail::bf16_panel) * N));
  for (index_t k0 = 0; k0 < K; k0 += detail::bf16_panel) {
    const index_t kb = std::min(detail::bf16_panel, K - k0);
    detail::widen_rows(B + k0 * ldb, ldb, kb, N, panel.data());
    matmul_nn<S>(M, N, kb, A + k0, lda, panel.data(), N, C, ldc, alpha, k0 == 0 ? beta : S(1));
  }
}

}  // namespace staticgrad::cpu
