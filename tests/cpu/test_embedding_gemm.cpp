// Embedding lookup and the GEMM wrappers on the CPU, against plain loops.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/embedding.hpp"
#include "staticgrad/backend/cpu/gemm.hpp"

using namespace staticgrad;
using namespace staticgrad::cpu;

namespace {
std::vector<double> random_vec(std::size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> x(n);
  for (auto& e : x) e = u(rng);
  return x;
}
}  // namespace

TEST_CASE("embedding forward copies rows; backward accumulates repeated ids") {
  std::mt19937_64 rng(1);
  const int V = 9, H = 5, T = 6;
  const auto table = random_vec(V * H, rng);
  const std::vector<std::int32_t> ids{3, 0, 8, 3, 3, 1};
  std::vector<double> out(T * H);
  embedding_forward(table.data(), ids.data(), out.data(), T, H, V);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) REQUIRE(out[t * H + h] == table[ids[t] * H + h]);

  const auto dout = random_vec(T * H, rng);
  std::vector<double> dtable(V * H, 0.0);
  embedding_backward(dout.data(), ids.data(), dtable.data(), T, H, V);
  for (int v = 0; v < V; ++v)
    for (int h = 0; h < H; ++h) {
      double expect = 0;
      for (int t = 0; t < T; ++t)
        if (ids[t] == v) expect += dout[t * H + h];
      REQUIRE(dtable[v * H + h] == doctest::Approx(expect).epsilon(1e-15));
    }

  // bf16 table: widened exactly.
  std::vector<bf16> tb(V * H);
  for (int i = 0; i < V * H; ++i) tb[i] = bf16(float(table[i]));
  std::vector<float> outf(T * H);
  embedding_forward(tb.data(), ids.data(), outf.data(), T, H, V);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) REQUIRE(outf[t * H + h] == float(tb[ids[t] * H + h]));
}

TEST_CASE("embedding rejects out-of-range ids, naming token index and id, before writing") {
  const int V = 4, H = 2;
  const std::vector<double> table(V * H, 1.0);
  for (std::int32_t bad : {4, -1, 100000}) {
    const std::vector<std::int32_t> ids{0, 1, bad};
    std::vector<double> out(3 * H, -7.0);
    try {
      embedding_forward(table.data(), ids.data(), out.data(), 3, H, V);
      FAIL("expected staticgrad::error");
    } catch (const staticgrad::error& e) {
      const std::string msg = e.what();
      CHECK(msg.find("at token 2") != std::string::npos);
      CHECK(msg.find("token id " + std::to_string(bad)) != std::string::npos);
    }
    for (double e : out) CHECK(e == -7.0);  // nothing written
  }
}

namespace {
// Plain-loop reference for op(A) op(B) with leading dimensions.
// ta/tb: whether A/B are stored transposed relative to [M,K] / [K,N].
void ref_gemm(bool ta, bool tb, int M, int N, int K, const double* A, int lda, const double* B,
              int ldb, double* C, int ldc, double alpha, double beta) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double acc = 0;
      for (int k = 0; k < K; ++k)
        acc += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = alpha * acc + (beta == 0 ? 0.0 : beta * C[i * ldc + j]);
    }
}
double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
}  // namespace

TEST_CASE("matmul_nt / nn / tn with leading dimensions, alpha and beta") {
  std::mt19937_64 rng(42);
  const int M = 7, N = 5, K = 6, pad = 3;  // every operand is a column block of a wider buffer
  for (double alpha : {1.0, -0.5})
    for (double beta : {0.0, 1.0, 2.0}) {
      CAPTURE(alpha);
      CAPTURE(beta);
      // nt: A[M,K] (ld K+pad), B[N,K] (ld K+pad), C[M,N] (ld N+pad, offset 1)
      auto A = random_vec(M * (K + pad), rng), B = random_vec(N * (K + pad), rng);
      auto C = random_vec(M * (N + pad) + 1, rng), R = C;
      if (beta == 0) std::fill(C.begin(), C.end(), NAN), R = C;  // must be overwritten, not read
      matmul_nt(M, N, K, A.data(), K + pad, B.data(), K + pad, C.data() + 1, N + pad, alpha, beta);
      ref_gemm(false, true, M, N, K, A.data(), K + pad, B.data(), K + pad, R.data() + 1, N + pad, alpha, beta);
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N + pad; ++j) {
          const std::size_t x = 1 + std::size_t(i) * (N + pad) + j;
          if (j < N) REQUIRE(std::abs(C[x] - R[x]) < 1e-13);
          else REQUIRE((std::isnan(C[x]) ? std::isnan(R[x]) : C[x] == R[x]));  // padding untouched
        }
      // nn: A[M,K], B[K,N]
      A = random_vec(M * (K + pad), rng);
      B = random_vec(K * (N + pad), rng);
      C = random_vec(M * (N + pad), rng);
      R = C;
      matmul_nn(M, N, K, A.data(), K + pad, B.data(), N + pad, C.data(), N + pad, alpha, beta);
      ref_gemm(false, false, M, N, K, A.data(), K + pad, B.data(), N + pad, R.data(), N + pad, alpha, beta);
      CHECK(max_diff(C, R) < 1e-13);
      // tn: A[K,M], B[K,N]  (dW = dy^T x)
      A = random_vec(K * (M + pad), rng);
      B = random_vec(K * (N + pad), rng);
      C = random_vec(M * (N + pad), rng);
      R = C;
      matmul_tn(M, N, K, A.data(), M + pad, B.data(), N + pad, C.data(), N + pad, alpha, beta);
      ref_gemm(true, false, M, N, K, A.data(), M + pad, B.data(), N + pad, R.data(), N + pad, alpha, beta);
      CHECK(max_diff(C, R) < 1e-13);
    }
}

TEST_CASE("LoRA side-by-side layout: [X | s XA] [W | B]^T is one matmul_nt") {
  std::mt19937_64 rng(3);
  const int T = 6, in = 8, out = 5, r = 2;
  const double s = 0.75;
  const auto X = random_vec(T * in, rng), W = random_vec(out * in, rng),
             A = random_vec(r * in, rng), Bm = random_vec(out * r, rng);
  // Wide activations [T, in + r]: X, then s * X A^T written by matmul_nt into columns [in, in+r).
  std::vector<double> XX(T * (in + r)), WB(out * (in + r)), Y(T * out), Y2(T * out);
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < in; ++i) XX[t * (in + r) + i] = X[t * in + i];
  matmul_nt(T, r, in, X.data(), in, A.data(), in, XX.data() + in, in + r, s);
  for (int o = 0; o < out; ++o) {
    for (int i = 0; i < in; ++i) WB[o * (in + r) + i] = W[o * in + i];
    for (int j = 0; j < r; ++j) WB[o * (in + r) + in + j] = Bm[o * r + j];
  }
  matmul_nt(T, out, in + r, XX.data(), in + r, WB.data(), in + r, Y.data(), out);
  // Separately: Y2 = X W^T + s (X A^T) B^T
  std::vector<double> XA(T * r);
  matmul_nt(T, out, in, X.data(), in, W.data(), in, Y2.data(), out);
  matmul_nt(T, r, in, X.data(), in, A.data(), in, XA.data(), r);
  matmul_nt(T, out, r, XA.data(), r, Bm.data(), r, Y2.data(), out, s, 1.0);
  CHECK(max_diff(Y, Y2) < 1e-13);
}

TEST_CASE("bf16 weight overloads equal the float product on the widened weight") {
  std::mt19937_64 rng(8);
  // N and K above the 256-row panel so that several panels are exercised.
  const int M = 3, N = 300, K = 270;
  std::vector<float> A(M * K), C(M * N, 1.0f), Cref(M * N, 1.0f);
  std::vector<bf16> Wb(N * K);
  std::vector<float> Wf(N * K);
  const auto a = random_vec(A.size(), rng), w = random_vec(Wb.size(), rng);
  for (std::size_t i = 0; i < A.size(); ++i) A[i] = float(a[i]);
  for (std::size_t i = 0; i < Wb.size(); ++i) { Wb[i] = bf16(float(w[i])); Wf[i] = float(Wb[i]); }
  // nt: y = x W^T with W [N, K]
  matmul_nt(M, N, K, A.data(), K, Wb.data(), K, C.data(), N, 2.0f, 0.5f);
  matmul_nt(M, N, K, A.data(), K, Wf.data(), K, Cref.data(), N, 2.0f, 0.5f);
  for (std::size_t i = 0; i < C.size(); ++i) REQUIRE(C[i] == doctest::Approx(Cref[i]).epsilon(1e-5).scale(1.0));
  // nn: dx = dy W with dy [M, N], W [N, K]
  std::vector<float> dy(M * N), dx(M * K, 3.0f), dxref(M * K, 3.0f);
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = float(w[i] * 0.5);
  matmul_nn(M, K, N, dy.data(), N, Wb.data(), K, dx.data(), K, 1.0f, 1.0f);
  matmul_nn(M, K, N, dy.data(), N, Wf.data(), K, dxref.data(), K, 1.0f, 1.0f);
  // fp32 baseline: sums of 300 products of O(1) terms, different panel order:
  // differences of a few ulp of the partial sums (~1e-5 absolute).
  for (std::size_t i = 0; i < dx.size(); ++i) REQUIRE(dx[i] == doctest::Approx(dxref[i]).epsilon(1e-5).scale(1.0));
}

TEST_CASE("gemm with an empty reduction (K = 0) gives beta * C") {
  std::vector<double> C{1, 2, 3, 4}, C0(4, NAN);
  std::vector<float> Cf{1, 2, 3, 4};
  const double* none = nullptr;
  matmul_nt(2, 2, 0, none, 1, none, 1, C.data(), 2, 1.0, 2.0);
  CHECK(C == std::vector<double>{2, 4, 6, 8});
  matmul_nn(2, 2, 0, none, 1, none, 2, C0.data(), 2, 1.0, 0.0);
  CHECK(C0 == std::vector<double>{0, 0, 0, 0});
  matmul_nn(2, 2, 0, static_cast<const float*>(nullptr), 1, static_cast<const bf16*>(nullptr), 2,
            Cf.data(), 2, 1.0f, 0.5f);
  CHECK(Cf == std::vector<float>{0.5f, 1, 1.5f, 2});
}

TEST_CASE("gemm rejects bad leading dimensions") {
  std::vector<double> x(64);
  CHECK_THROWS_AS(matmul_nt(2, 2, 4, x.data(), 3, x.data(), 4, x.data() + 32, 2), staticgrad::error);
  CHECK_THROWS_AS(matmul_nn(2, 2, 4, x.data(), 4, x.data(), 1, x.data() + 32, 2), staticgrad::error);
  CHECK_NOTHROW(matmul_tn(0, 2, 4, x.data(), 1, x.data(), 2, x.data() + 32, 2));
}
