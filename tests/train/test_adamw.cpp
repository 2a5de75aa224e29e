// AdamW against (1) torch.optim.AdamW trajectories stored by
// scripts/make_adamw_fixture.py and (2) an independent textbook
// implementation in double (m_hat / v_hat form) written here; schedules
// against their closed forms.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <numbers>

#include <nlohmann/json.hpp>

#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/schedule.hpp"

using namespace staticgrad;

namespace {

nlohmann::json load_fixture() {
  std::ifstream in(std::string(STATICGRAD_SOURCE_DIR) + "/tests/fixtures/train/adamw_torch.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::vector<std::vector<float>> as_tensors(const nlohmann::json& j) {
  std::vector<std::vector<float>> v;
  for (const auto& t : j) v.push_back(t.get<std::vector<float>>());
  return v;
}

// Textbook AdamW (Loshchilov & Hutter with torch's decay placement), double.
struct reference_adamw {
  double beta1, beta2, eps, wd;
  std::vector<std::vector<double>> p, m, v;
  int t = 0;
  void step(const std::vector<std::vector<double>>& g, double lr) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i)
      for (std::size_t k = 0; k < p[i].size(); ++k) {
        p[i][k] -= lr * wd * p[i][k];
        m[i][k] = beta1 * m[i][k] + (1 - beta1) * g[i][k];
        v[i][k] = beta2 * v[i][k] + (1 - beta2) * g[i][k] * g[i][k];
        const double mh = m[i][k] / (1 - std::pow(beta1, t)), vh = v[i][k] / (1 - std::pow(beta2, t));
        p[i][k] -= lr * mh / (std::sqrt(vh) + eps);
      }
  }
};

}  // namespace

TEST_CASE("AdamW matches torch.optim.AdamW and a textbook implementation") {
  const auto doc = load_fixture();
  REQUIRE(doc["cases"].size() == 3);
  for (const auto& c : doc["cases"]) {
    SUBCASE(c["name"].get<std::string>().c_str()) {
      train::adamw_options o{.lr = c["lr"], .beta1 = c["beta1"], .beta2 = c["beta2"], .eps = c["eps"],
                             .weight_decay = c["weight_decay"], .max_grad_norm = c["max_grad_norm"]};
      train::adamw opt(o);
      auto params = as_tensors(c["init"]);
      reference_adamw ref{o.beta1, o.beta2, o.eps, o.weight_decay, {}, {}, {}};
      for (auto& t : params) {
        ref.p.emplace_back(t.begin(), t.end());
        ref.m.emplace_back(t.size(), 0.0);
        ref.v.emplace_back(t.size(), 0.0);
      }
      for (std::size_t s = 0; s < c["lrs"].size(); ++s) {
        auto grads = as_tensors(c["grads"][s]);
        // Clipping, written out independently for the reference.
        std::vector<std::vector<double>> rg;
        double sq = 0;
        for (auto& g : grads) {
          rg.emplace_back(g.begin(), g.end());
          for (float x : g) sq += double(x) * x;
        }
        if (o.max_grad_norm > 0) {
          const double coef = std::min(1.0, o.max_grad_norm / (std::sqrt(sq) + 1e-6));
          for (auto& g : rg)
            for (double& x : g) x *= coef;
          // The f32 optimizer gets the same clipped gradients (clip_grad_norm
          // on an adapter is tested below).
          for (auto& g : grads)
            for (float& x : g) x = float(x * coef);
        }
        std::vector<std::span<float>> ps(params.begin(), params.end()), gs(grads.begin(), grads.end());
        const double lr = c["lrs"][s];
        opt.step(ps, gs, lr);
        ref.step(rg, lr);
        const auto torch_after = as_tensors(c["after"][s]);
        for (std::size_t i = 0; i < params.size(); ++i)
          for (std::size_t k = 0; k < params[i].size(); ++k) {
            INFO("step " << s + 1 << " tensor " << i << " element " << k);
            CHECK(std::abs(params[i][k] - torch_after[i][k]) <= 1e-6 * std::max(1.0, std::abs(double(torch_after[i][k]))));
            CHECK(std::abs(params[i][k] - ref.p[i][k]) <= 1e-6 * std::max(1.0, std::abs(ref.p[i][k])));
          }
      }
    }
  }
}

TEST_CASE("clip_grad_norm and adamw_lora on an adapter agree with the flat optimizer") {
  io::hf_config mc;
  mc.hidden_size = 8;
  mc.intermediate_size = 12;
  mc.num_hidden_layers = 2;
  mc.num_attention_heads = 2;
  mc.num_key_value_heads = 1;
  mc.head_dim = 4;
  mc.vocab_size = 10;
  io::lora_config lc;
  lc.r = 2;
  lc.target_modules = {io::lora_target::q_proj, io::lora_target::down_proj};
  auto p = io::make_lora_adapter(lc, mc), g = io::make_lora_adapter(lc, mc);
  float x = 0.1f;
  train::for_each_lora_tensor(p, g, [&](std::span<float> pa, std::span<float> ga) {
    for (std::size_t k = 0; k < pa.size(); ++k) {
      pa[k] = std::sin(x += 0.37f);
      ga[k] = 3 * std::cos(x += 0.11f);
    }
  });
  double sq = 0;
  train::for_each_lora_tensor(p, g, [&](std::span<float>, std::span<float> ga) {
    for (float v : ga) sq += double(v) * v;
  });
  CHECK(train::grad_norm(p, g) == doctest::Approx(std::sqrt(sq)));
  auto p2 = p, g2 = g;
  train::adamw_lora opt({.lr = 0.01, .weight_decay = 0.05, .max_grad_norm = 1.0});
  const double norm = opt.step(p, g, 0.01);
  CHECK(norm == doctest::Approx(std::sqrt(sq)));
  CHECK(train::grad_norm(p, g) == doctest::Approx(1.0).epsilon(1e-5));  // clipped in place
  // The same with the flat optimizer on pre-scaled gradients.
  const float f = float(1.0 / (std::sqrt(sq) + 1e-6));
  std::vector<std::span<float>> ps, gs;
  train::for_each_lora_tensor(p2, g2, [&](std::span<float> pa, std::span<float> ga) {
    for (float& v : ga) v *= f;
    ps.push_back(pa);
    gs.push_back(ga);
  });
  train::adamw flat({.lr = 0.01, .weight_decay = 0.05});
  flat.step(ps, gs, 0.01);
  for (std::int64_t l = 0; l < 2; ++l)
    for (auto t : lc.target_modules) {
      CHECK(p.at(l, t).a == p2.at(l, t).a);
      CHECK(p.at(l, t).b == p2.at(l, t).b);
    }
}

TEST_CASE("learning-rate schedules") {
  train::lr_schedule c{train::schedule_kind::constant, 0.1, 0, 10};
  CHECK(c.at(1) == 0.1);
  CHECK(c.at(10) == 0.1);
  train::lr_schedule w{train::schedule_kind::cosine, 0.2, 4, 14, 0.0};
  CHECK(w.at(1) == doctest::Approx(0.05));
  CHECK(w.at(4) == doctest::Approx(0.2));
  CHECK(w.at(9) == doctest::Approx(0.2 * 0.5 * (1 + std::cos(std::numbers::pi * 0.5))));
  CHECK(w.at(14) == doctest::Approx(0.0));
  train::lr_schedule lin{train::schedule_kind::linear, 0.2, 0, 10, 0.02};
  CHECK(lin.at(5) == doctest::Approx(0.02 + 0.18 * 0.5));
  CHECK(lin.at(10) == doctest::Approx(0.02));
  CHECK_THROWS_AS(train::parse_schedule("step"), staticgrad::error);
}
