// Causal GQA attention on the CPU: forward against a naive full-matrix
// reference, backward against central finite differences, sequence isolation,
// float against double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "staticgrad/backend/cpu/attention.hpp"

using namespace staticgrad;
using namespace staticgrad::cpu;

namespace {

std::vector<double> random_vec(std::size_t n, std::mt19937_64& rng, double amp = 1.0) {
  std::uniform_real_distribution<double> u(-amp, amp);
  std::vector<double> x(n);
  for (auto& e : x) e = u(rng);
  return x;
}

// Independent reference: for each head, the full [T, T] score matrix of the
// whole batch with a mask that allows j <= i only when i and j are in the same
// sequence. Plain loops in double; softmax by the textbook formula.
void naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, std::vector<double>& out,
                     std::vector<double>& lse, const std::vector<std::int32_t>& seq_start,
                     int H, int KV, int d) {
  const int T = seq_start.back();
  std::vector<int> seq_of(T);
  for (std::size_t s = 0; s + 1 < seq_start.size(); ++s)
    for (int t = seq_start[s]; t < seq_start[s + 1]; ++t) seq_of[t] = static_cast<int>(s);
  out.assign(static_cast<std::size_t>(T) * H * d, 0.0);
  lse.assign(static_cast<std::size_t>(T) * H, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int h = 0; h < H; ++h) {
    const int g = h / (H / KV);
    std::vector<double> S(static_cast<std::size_t>(T) * T, -INFINITY);
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < T; ++j) {
        if (seq_of[i] != seq_of[j] || j > i) continue;
        double acc = 0;
        for (int c = 0; c < d; ++c) acc += q[(i * H + h) * d + c] * k[(j * KV + g) * d + c];
        S[i * T + j] = acc * scale;
      }
    for (int i = 0; i < T; ++i) {
      double m = -INFINITY;
      for (int j = 0; j < T; ++j) m = std::max(m, S[i * T + j]);
      double z = 0;
      for (int j = 0; j < T; ++j) z += std::exp(S[i * T + j] - m);
      lse[i * H + h] = m + std::log(z);
      for (int j = 0; j < T; ++j) {
        const double p = std::exp(S[i * T + j] - m) / z;
        for (int c = 0; c < d; ++c) out[(i * H + h) * d + c] += p * v[(j * KV + g) * d + c];
      }
    }
  }
}

struct case_t {
  std::vector<std::int64_t> lengths;
  int heads, kv_heads, head_dim;
};

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("attention forward matches the naive masked reference (packed, GQA 1/2/4)") {
  std::mt19937_64 rng(1234);
  for (const case_t& c : {case_t{{1, 5, 17}, 4, 4, 8}, case_t{{1, 5, 17}, 4, 2, 8},
                         case_t{{17, 1, 5}, 8, 2, 16}, case_t{{3, 9}, 4, 1, 8},
                         case_t{{32}, 2, 1, 4},
                         // longer than query_block (64): several query blocks per sequence
                         case_t{{1, 70, 5, 130}, 4, 2, 8}}) {
    CAPTURE(c.heads);
    CAPTURE(c.kv_heads);
    const owned_layout lay = make_packed_layout(c.lengths);
    const int T = lay.seq_start.back();
    auto q = random_vec(std::size_t(T) * c.heads * c.head_dim, rng, 2.0);
    auto k = random_vec(std::size_t(T) * c.kv_heads * c.head_dim, rng, 2.0);
    auto v = random_vec(std::size_t(T) * c.kv_heads * c.head_dim, rng);
    std::vector<double> out(q.size()), lse(std::size_t(T) * c.heads), ref_out, ref_lse;
    attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), lay.view(), c.heads,
                      c.kv_heads, c.head_dim);
    naive_attention(q, k, v, ref_out, ref_lse, lay.seq_start, c.heads, c.kv_heads, c.head_dim);
    // Both in double, O(1) values, sums of <= 32 terms: agreement to ~1e-15;
    // 1e-12 leaves room for different summation order and exp/log rounding.
    CHECK(max_abs_diff(out, ref_out) < 1e-12);
    CHECK(max_abs_diff(lse, ref_lse) < 1e-12);

    // A sequence of length 1 attends only to itself: out equals its own v.
    if (c.lengths[0] == 1)
      for (int h = 0; h < c.heads; ++h)
        for (int j = 0; j < c.head_dim; ++j)
          CHECK(out[h * c.head_dim + j] ==
                doctest::Approx(v[(h / (c.heads / c.kv_heads)) * c.head_dim + j]).epsilon(1e-14));
  }
}

TEST_CASE("attention backward matches central finite differences for q, k and v") {
  std::mt19937_64 rng(99);
  for (const case_t& c : {case_t{{1, 5, 17}, 4, 4, 8}, case_t{{1, 5, 17}, 4, 2, 8},
                         case_t{{5, 1, 17}, 4, 1, 8},
                         case_t{{67, 3}, 2, 1, 4}}) {  // crosses a query block boundary
    CAPTURE(c.kv_heads);
    const owned_layout lay = make_packed_layout(c.lengths);
    const auto view = lay.view();
    const int T = lay.seq_start.back(), H = c.heads, KV = c.kv_heads, d = c.head_dim;
    auto q = random_vec(std::size_t(T) * H * d, rng);
    auto k = random_vec(std::size_t(T) * KV * d, rng);
    auto v = random_vec(std::size_t(T) * KV * d, rng);
    const auto w = random_vec(q.size(), rng);  // loss = sum(out * w), so dout = w
    std::vector<double> out(q.size()), lse(std::size_t(T) * H);
    auto loss = [&] {
      attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), view, H, KV, d);
      double acc = 0;
      for (std::size_t i = 0; i < out.size(); ++i) acc += out[i] * w[i];
      return acc;
    };
    loss();
    // NaN-fill: the backward must overwrite, never accumulate into, its outputs.
    std::vector<double> dq(q.size(), NAN), dk(k.size(), NAN), dv(v.size(), NAN);
    attention_backward(q.data(), k.data(), v.data(), out.data(), lse.data(), w.data(), dq.data(),
                       dk.data(), dv.data(), view, H, KV, d);

    // Tolerance: central differences with eps = 1e-6 have truncation error
    // ~eps^2 |f'''| ~ 1e-12 and rounding error ~ 1e-16 |loss| / eps ~ 1e-9
    // (|loss| ~ 10 here). Gradient entries are O(0.1..1), so an absolute
    // bound of 1e-7 plus 1e-6 relative is ~100x above the double-precision
    // noise and orders of magnitude below any real mistake (a missing term
    // moves a gradient by >= 1e-3).
    const double eps = 1e-6;
    auto check_grad = [&](std::vector<double>& x, const std::vector<double>& g, const char* name) {
      CAPTURE(name);
      double worst = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double keep = x[i];
        x[i] = keep + eps;
        const double lp = loss();
        x[i] = keep - eps;
        const double lm = loss();
        x[i] = keep;
        const double fd = (lp - lm) / (2 * eps);
        REQUIRE(std::isfinite(g[i]));
        worst = std::max(worst, std::abs(fd - g[i]) / (1e-7 + 1e-6 * std::abs(fd)));
      }
      CHECK(worst <= 1.0);
    };
    check_grad(q, dq, "q");
    check_grad(k, dk, "k");
    check_grad(v, dv, "v");
  }
}

TEST_CASE("attention never mixes sequences") {
  std::mt19937_64 rng(7);
  const owned_layout lay = make_packed_layout({5, 1, 17});
  const auto view = lay.view();
  const int T = 23, H = 4, KV = 2, d = 8;
  auto q = random_vec(std::size_t(T) * H * d, rng);
  auto k = random_vec(std::size_t(T) * KV * d, rng);
  auto v = random_vec(std::size_t(T) * KV * d, rng);
  std::vector<double> out0(q.size()), lse0(std::size_t(T) * H), out1(q.size()), lse1(lse0.size());
  attention_forward(q.data(), k.data(), v.data(), out0.data(), lse0.data(), view, H, KV, d);
  // Perturb every input of the last token of sequence A = [0, 5).
  for (int c = 0; c < H * d; ++c) q[4 * H * d + c] += 0.5;
  for (int c = 0; c < KV * d; ++c) { k[4 * KV * d + c] -= 0.7; v[4 * KV * d + c] += 1.1; }
  attention_forward(q.data(), k.data(), v.data(), out1.data(), lse1.data(), view, H, KV, d);
  // Sequences B and C ([5, 23)) must be bit-for-bit unchanged; A must change.
  for (std::size_t i = std::size_t(5) * H * d; i < out0.size(); ++i) REQUIRE(out0[i] == out1[i]);
  for (std::size_t i = std::size_t(5) * H; i < lse0.size(); ++i) REQUIRE(lse0[i] == lse1[i]);
  CHECK(out0[4 * H * d] != out1[4 * H * d]);

  // Backward: an upstream gradient living only in sequence C = [6, 23) gives
  // exactly zero gradient to every token of A and B.
  std::vector<double> dout(q.size(), 0.0);
  for (std::size_t i = std::size_t(6) * H * d; i < dout.size(); ++i) dout[i] = 1.0 + 1e-3 * double(i);
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward(q.data(), k.data(), v.data(), out1.data(), lse1.data(), dout.data(), dq.data(),
                     dk.data(), dv.data(), view, H, KV, d);
  for (int i = 0; i < 6 * H * d; ++i) REQUIRE(dq[i] == 0.0);
  for (int i = 0; i < 6 * KV * d; ++i) {
    REQUIRE(dk[i] == 0.0);
    REQUIRE(dv[i] == 0.0);
  }
  double mass = 0;
  for (std::size_t i = std::size_t(6) * KV * d; i < dv.size(); ++i) mass += std::abs(dv[i]);
  CHECK(mass > 0.0);
}

TEST_CASE("attention in float agrees with double to fp32 tolerance") {
  std::mt19937_64 rng(5);
  const owned_layout lay = make_packed_layout({1, 5, 17, 100});
  const auto view = lay.view();
  const int T = 123, H = 8, KV = 2, d = 32;
  auto q = random_vec(std::size_t(T) * H * d, rng), k = random_vec(std::size_t(T) * KV * d, rng),
       v = random_vec(std::size_t(T) * KV * d, rng), dout = random_vec(q.size(), rng);
  std::vector<double> out(q.size()), lse(std::size_t(T) * H), dq(q.size()), dk(k.size()), dv(v.size());
  attention_forward(q.data(), k.data(), v.data(), out.data(), lse.data(), view, H, KV, d);
  attention_backward(q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(),
                     dk.data(), dv.data(), view, H, KV, d);
  auto to_f = [](const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); };
  auto qf = to_f(q), kf = to_f(k), vf = to_f(v), doutf = to_f(dout);
  std::vector<float> outf(q.size()), lsef(lse.size()), dqf(q.size()), dkf(k.size()), dvf(v.size());
  attention_forward(qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(), view, H, KV, d);
  attention_backward(qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(), doutf.data(),
                     dqf.data(), dkf.data(), dvf.data(), view, H, KV, d);
  // fp32 baseline: inputs rounded to 2^-24 relative, dot products of 32 terms
  // and sums of <= 100 terms, each O(1): expected error a few 1e-6. dk/dv sum
  // over 4 query heads and up to 100 queries, so they get a larger bound.
  auto rel = [](const std::vector<double>& a, const std::vector<float>& b) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      num = std::max(num, std::abs(a[i] - double(b[i])));
      den = std::max(den, std::abs(a[i]));
    }
    return num / den;
  };
  CHECK(rel(out, outf) < 1e-5);
  CHECK(rel(lse, lsef) < 1e-5);
  CHECK(rel(dq, dqf) < 2e-5);
  CHECK(rel(dk, dkf) < 2e-5);
  CHECK(rel(dv, dvf) < 2e-5);
}

TEST_CASE("attention rejects inconsistent shapes and layouts") {
  const owned_layout lay = make_packed_layout({3});
  std::vector<double> x(3 * 6 * 4), l(3 * 6);
  CHECK_THROWS_AS(attention_forward(x.data(), x.data(), x.data(), x.data(), l.data(), lay.view(), 6, 4, 4),
                  staticgrad::error);
  CHECK_THROWS_AS(attention_forward(x.data(), x.data(), x.data(), x.data(), l.data(), lay.view(), 6, 2, 0),
                  staticgrad::error);
  const std::vector<std::int32_t> pos{0, 1, 2}, bad_start{0, 2, 2, 3};
  CHECK_THROWS_AS(attention_forward(x.data(), x.data(), x.data(), x.data(), l.data(),
                                    token_layout{pos, bad_start}, 6, 2, 4),
                  staticgrad::error);
}

TEST_CASE("token layouts: builders and validation") {
  const owned_layout u = make_uniform_layout(3, 4);
  CHECK(u.seq_start == std::vector<std::int32_t>{0, 4, 8, 12});
  CHECK(u.positions == std::vector<std::int32_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3});
  CHECK_NOTHROW(validate_layout(u.view(), 12));
  CHECK_THROWS_AS(validate_layout(u.view(), 11), staticgrad::error);
  const std::vector<std::int32_t> pos{0, 1, 2}, s1{1, 3}, s2{0, 2}, s3{0}, negpos{0, -1, 2}, ok{0, 3};
  CHECK_THROWS_AS(validate_layout(token_layout{pos, s1}), staticgrad::error);  // not from 0
  CHECK_THROWS_AS(validate_layout(token_layout{pos, s2}), staticgrad::error);  // ends != T
  CHECK_THROWS_AS(validate_layout(token_layout{pos, s3}), staticgrad::error);  // too short
  CHECK_THROWS_AS(validate_layout(token_layout{negpos, ok}), staticgrad::error);
  CHECK_THROWS_AS(make_packed_layout({2, 0, 3}), staticgrad::error);
  CHECK_THROWS_AS(make_uniform_layout(0, 3), staticgrad::error);
}
