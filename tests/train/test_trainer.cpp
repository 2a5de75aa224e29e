// The trainer and its pieces on the tiny Hugging Face fixtures:
//  - PEFT-style LoRA init (bounds, B = 0, moments of U(-b, b));
//  - a few trainer steps lower the file's loss, the adapter round-trips
//    through io::read_peft_adapter, and the same seed gives the same adapter.
// evaluate_file and merge: test_evaluate_merge.cpp.
#include "support/trainer_fixture.hpp"

#include <cmath>

#include "staticgrad/train/evaluate.hpp"
#include "staticgrad/train/trainer.hpp"

using namespace staticgrad;
using model_t = sgtest::trainer_model;
using sgtest::qwen_tokenizer;
using sgtest::scratch;

TEST_CASE("init_lora: A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0, seeded") {
  const auto cfg = io::read_hf_config(sg_fixtures::hf_fixture_dir("tied_v1000_l3_r8_all7_theta1e4"));
  io::lora_config lc;
  lc.r = 8;
  lc.target_modules = {io::all_lora_targets.begin(), io::all_lora_targets.end()};
  auto a = io::make_lora_adapter(lc, cfg), b = io::make_lora_adapter(lc, cfg), c = io::make_lora_adapter(lc, cfg);
  train::init_lora(a, cfg, 7);
  train::init_lora(b, cfg, 7);
  train::init_lora(c, cfg, 8);
  for (std::int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    for (auto t : lc.target_modules) {
      const double bound = 1.0 / std::sqrt(double(io::target_in_features(t, cfg)));
      const auto& A = a.at(l, t).a;
      double mean = 0, sq = 0, mx = 0;
      for (float x : A) {
        mean += x;
        sq += double(x) * x;
        mx = std::max(mx, std::abs(double(x)));
      }
      mean /= double(A.size());
      sq /= double(A.size());
      CHECK(mx <= bound);
      CHECK(mx > 0.9 * bound);
      CHECK(std::abs(mean) < 0.1 * bound);                       // E = 0; n >= 1024, sd(mean) ~ 0.018 b
      CHECK(std::abs(sq / (bound * bound) - 1.0 / 3.0) < 0.05);  // E[x^2] = b^2 / 3
      for (float x : a.at(l, t).b) CHECK(x == 0.f);
      CHECK(A == b.at(l, t).a);
      CHECK(A != c.at(l, t).a);
    }
}

TEST_CASE("trainer: a few steps lower the loss; the adapter round-trips; same seed, same adapter") {
  const auto dir = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");
  const auto data = (dir / "data.jsonl").string();
  auto model = model_t::load(dir);
  train::train_options o;
  o.lora.r = 4;
  o.lora.lora_alpha = 8;
  o.lora.target_modules = {io::lora_target::q_proj, io::lora_target::v_proj, io::lora_target::down_proj};
  o.steps = 8;
  o.batch_tokens = 128;
  o.max_len = 64;
  o.optim.lr = 1e-2;
  o.seed = 3;
  o.log = nullptr;
  o.out = scratch("trainer") / "adapter";
  train::trainer<models::qwen2_tiny> tr(*model, qwen_tokenizer(), {data}, o);
  CHECK(tr.rows() == 2);
  const auto res = tr.run();
  REQUIRE(res.steps.size() == 8);
  CHECK(res.steps.back().loss < res.steps.front().loss);
  // The file's loss with the trained adapter, against the base model's.
  const auto xs = train::read_examples(data, qwen_tokenizer());
  auto trained = io::read_peft_adapter(o.out, model->config());
  CHECK(trained.config.r == 4);
  CHECK(trained.config.target_modules == o.lora.target_modules);
  for (std::int64_t l = 0; l < trained.num_layers; ++l)
    for (auto t : o.lora.target_modules) CHECK(trained.at(l, t).b == tr.adapter().at(l, t).b);
  auto zero = io::make_lora_adapter(trained.config, model->config());
  model->attach(&zero);
  const double base = train::evaluate_file(*model, xs, data, false).mean();
  model->attach(&trained);
  const double after = train::evaluate_file(*model, xs, data, false).mean();
  CHECK(after < base);
  // Determinism, with gradient accumulation and dropout on.
  auto o2 = o;
  o2.out.clear();
  o2.steps = 3;
  o2.grad_accum = 2;
  o2.lora.lora_dropout = 0.1;
  auto m1 = model_t::load(dir), m2 = model_t::load(dir);
  train::trainer<models::qwen2_tiny> t1(*m1, qwen_tokenizer(), {data}, o2), t2(*m2, qwen_tokenizer(), {data}, o2);
  const auto r1 = t1.run(), r2 = t2.run();
  for (std::size_t i = 0; i < r1.steps.size(); ++i) CHECK(r1.steps[i].loss == r2.steps[i].loss);
  for (std::int64_t l = 0; l < trained.num_layers; ++l)
    for (auto t : o.lora.target_modules) {
      CHECK(t1.adapter().at(l, t).a == t2.adapter().at(l, t).a);
      CHECK(t1.adapter().at(l, t).b == t2.adapter().at(l, t).b);
    }
}
