// Fused LM head + cross-entropy on the CPU: forward against naive full
// logits, chunk-size independence, ignore index, the fused gradient against
// finite differences, shift_labels, float against double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "staticgrad/backend/cpu/cross_entropy.hpp"

using namespace staticgrad;
using namespace staticgrad::cpu;

namespace {

std::vector<double> random_vec(std::size_t n, std::mt19937_64& rng, double amp = 1.0) {
  std::uniform_real_distribution<double> u(-amp, amp);
  std::vector<double> x(n);
  for (auto& e : x) e = u(rng);
  return x;
}

// Naive reference: full logits by plain loops, log-softmax per row in double.
ce_result<double> naive_ce(const std::vector<double>& hid, const std::vector<double>& w,
                           const std::vector<std::int32_t>& tg, int T, int H, int V) {
  double sum = 0;
  std::int64_t n = 0;
  for (int t = 0; t < T; ++t) {
    if (tg[t] == -100) continue;
    std::vector<double> z(V);
    for (int v = 0; v < V; ++v) {
      double acc = 0;
      for (int h = 0; h < H; ++h) acc += hid[t * H + h] * w[v * H + h];
      z[v] = acc;
    }
    double m = z[0];
    for (double e : z) m = std::max(m, e);
    double s = 0;
    for (double e : z) s += std::exp(e - m);
    sum += -(z[tg[t]] - m - std::log(s));
    ++n;
  }
  return {sum, n};
}

struct problem {
  int T = 13, H = 24, V = 50;
  std::vector<double> hid, w;
  std::vector<std::int32_t> tg;
  explicit problem(std::uint64_t seed, int T_ = 13, int H_ = 24, int V_ = 50) : T(T_), H(H_), V(V_) {
    std::mt19937_64 rng(seed);
    hid = random_vec(std::size_t(T) * H, rng, 1.0);
    w = random_vec(std::size_t(V) * H, rng, 0.5);
    std::uniform_int_distribution<int> pick(0, V - 1);
    tg.resize(T);
    for (int t = 0; t < T; ++t) tg[t] = (t % 4 == 2) ? -100 : pick(rng);  // some ignored
  }
};

}  // namespace

TEST_CASE("CE forward equals the naive full-logits reference for every chunk size") {
  problem p(11);
  const auto ref = naive_ce(p.hid, p.w, p.tg, p.T, p.H, p.V);
  REQUIRE(ref.counted == 10);  // 13 tokens, t = 2, 6, 10 ignored
  std::vector<double> g_first;
  for (std::int64_t chunk : {std::int64_t{1}, std::int64_t{3}, std::int64_t{p.T}, std::int64_t{1000}}) {
    CAPTURE(chunk);
    std::vector<double> dh(p.hid.size(), NAN);
    const auto r = lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), dh.data(), p.T, p.H,
                                      p.V, 1.0 / double(ref.counted), chunk);
    CHECK(r.counted == ref.counted);
    // Double, 10 terms of O(4): agreement to ~1e-14 relative.
    CHECK(r.loss_sum == doctest::Approx(ref.loss_sum).epsilon(1e-12));
    const auto r_nograd = lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(),
                                             static_cast<double*>(nullptr), p.T, p.H, p.V, 1.0, chunk);
    CHECK(r_nograd.loss_sum == r.loss_sum);  // the gradient pass does not disturb the loss
    if (g_first.empty()) g_first = dh;
    else
      for (std::size_t i = 0; i < dh.size(); ++i)  // chunking changes only GEMM blocking
        REQUIRE(dh[i] == doctest::Approx(g_first[i]).epsilon(1e-12).scale(1e-12));
    // Ignored tokens get exactly zero gradient.
    for (int t = 2; t < p.T; t += 4)
      for (int h = 0; h < p.H; ++h) REQUIRE(dh[t * p.H + h] == 0.0);
  }
}

TEST_CASE("CE fused gradient matches central finite differences of the mean loss") {
  problem p(21, 9, 16, 37);
  const auto base = lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(),
                                       static_cast<double*>(nullptr), p.T, p.H, p.V, 1.0, 4);
  const double scale = 1.0 / double(base.counted);
  std::vector<double> dh(p.hid.size());
  lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), dh.data(), p.T, p.H, p.V, scale, 4);
  auto mean_loss = [&] {
    return lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), static_cast<double*>(nullptr),
                              p.T, p.H, p.V, 1.0, 4)
               .loss_sum * scale;
  };
  // Tolerance: mean loss ~4, eps = 1e-6: rounding ~1e-16 * 4 / 1e-6 ~ 4e-10,
  // truncation ~eps^2 ~ 1e-12. Gradient entries are O(0.01..0.1); an absolute
  // bound of 1e-8 plus 1e-6 relative sits ~25x above that noise.
  const double eps = 1e-6;
  double worst = 0;
  for (std::size_t i = 0; i < p.hid.size(); ++i) {
    const double keep = p.hid[i];
    p.hid[i] = keep + eps;
    const double lp = mean_loss();
    p.hid[i] = keep - eps;
    const double lm = mean_loss();
    p.hid[i] = keep;
    const double fd = (lp - lm) / (2 * eps);
    worst = std::max(worst, std::abs(fd - dh[i]) / (1e-8 + 1e-6 * std::abs(fd)));
  }
  CHECK(worst <= 1.0);
  double norm = 0;
  for (double e : dh) norm += e * e;
  CHECK(norm > 1e-6);  // the check above is not vacuous
}

TEST_CASE("CE with every token ignored: counted 0, loss 0, zero gradient, no NaN") {
  problem p(3, 6, 8, 20);
  std::fill(p.tg.begin(), p.tg.end(), -100);
  std::vector<double> dh(p.hid.size(), NAN);
  const auto r = lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), dh.data(), p.T, p.H, p.V,
                                    1.0, 4);
  CHECK(r.counted == 0);
  CHECK(r.loss_sum == 0.0);
  for (double e : dh) REQUIRE(e == 0.0);
  // T = 0 is also fine.
  const auto r0 = lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), dh.data(), 0, p.H, p.V,
                                     1.0, 4);
  CHECK(r0.counted == 0);
  CHECK(r0.loss_sum == 0.0);
}

TEST_CASE("CE is stable for large logits and rejects bad targets") {
  problem p(5, 4, 8, 30);
  for (auto& e : p.hid) e *= 2000.0;  // logits ~ 1e3: naive exp would overflow
  std::vector<float> hf(p.hid.begin(), p.hid.end()), wf(p.w.begin(), p.w.end()), dh(hf.size());
  const auto r = lm_head_ce_forward(hf.data(), wf.data(), p.tg.data(), dh.data(), p.T, p.H, p.V,
                                    1.0f, 2);
  CHECK(std::isfinite(r.loss_sum));
  CHECK(r.loss_sum >= 0.0f);
  for (float e : dh) REQUIRE(std::isfinite(e));

  p.tg[1] = p.V;  // out of range
  try {
    lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), static_cast<double*>(nullptr), p.T,
                       p.H, p.V, 1.0, 2);
    FAIL("expected staticgrad::error");
  } catch (const staticgrad::error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("token 1") != std::string::npos);
    CHECK(msg.find(std::to_string(p.V)) != std::string::npos);
  }
  p.tg[1] = -1;
  CHECK_THROWS_AS(lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(),
                                     static_cast<double*>(nullptr), p.T, p.H, p.V, 1.0, 2),
                  staticgrad::error);
  p.tg[1] = 0;
  CHECK_THROWS_AS(lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(),
                                     static_cast<double*>(nullptr), p.T, p.H, p.V, 1.0, 0),
                  staticgrad::error);
}

TEST_CASE("lm_head_logits equals the plain product") {
  problem p(8, 5, 7, 11);
  std::vector<double> logits(std::size_t(p.T) * p.V);
  lm_head_logits(p.hid.data(), p.w.data(), logits.data(), p.T, p.H, p.V);
  for (int t = 0; t < p.T; ++t)
    for (int v = 0; v < p.V; ++v) {
      double acc = 0;
      for (int h = 0; h < p.H; ++h) acc += p.hid[t * p.H + h] * p.w[v * p.H + h];
      REQUIRE(logits[t * p.V + v] == doctest::Approx(acc).epsilon(1e-13));
    }
}

TEST_CASE("shift_labels: next token within a sequence, -100 at each sequence end") {
  const owned_layout lay = make_packed_layout({3, 1, 4});
  const std::vector<std::int32_t> labels{10, 11, 12, 20, 30, -100, 32, 33};
  const auto tg = shift_labels(labels, lay.view());
  CHECK(tg == std::vector<std::int32_t>{11, 12, -100, -100, -100, 32, 33, -100});
  CHECK_THROWS_AS(shift_labels(std::span<const std::int32_t>(labels.data(), 7), lay.view()),
                  staticgrad::error);
}

TEST_CASE("CE in float agrees with double to fp32 tolerance") {
  problem p(17, 40, 64, 1000);
  const auto ref = naive_ce(p.hid, p.w, p.tg, p.T, p.H, p.V);
  std::vector<double> dh(p.hid.size());
  lm_head_ce_forward(p.hid.data(), p.w.data(), p.tg.data(), dh.data(), p.T, p.H, p.V,
                     1.0 / double(ref.counted), 7);
  std::vector<float> hf(p.hid.begin(), p.hid.end()), wf(p.w.begin(), p.w.end()), dhf(hf.size());
  const auto rf = lm_head_ce_forward(hf.data(), wf.data(), p.tg.data(), dhf.data(), p.T, p.H, p.V,
                                     1.0f / float(ref.counted), 7);
  CHECK(rf.counted == ref.counted);
  // fp32: logits are 64-term dot products (~1e-6 relative), the softmax
  // normaliser sums 1000 terms; loss per token ~7, so ~1e-5 relative overall.
  CHECK(double(rf.loss_sum) == doctest::Approx(ref.loss_sum).epsilon(2e-5));
  double num = 0, den = 0;
  for (std::size_t i = 0; i < dh.size(); ++i) {
    num = std::max(num, std::abs(dh[i] - double(dhf[i])));
    den = std::max(den, std::abs(dh[i]));
  }
  CHECK(num / den < 2e-5);
}
