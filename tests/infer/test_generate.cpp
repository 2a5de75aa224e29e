// Generation against Hugging Face: the KV-cache decoder's logits equal
// transformers + PEFT's (tests/fixtures/hf, fed one token at a time through
// the cache and as one prefill) and the plan-driven CPU model's; greedy
// generate() equals transformers' generate() token for token
// (tests/fixtures/generate/cases.json, scripts/make_generate_fixtures.py),
// with and without an adapter, with a repetition penalty and a list of stop
// ids; the sampler's filters follow transformers' definitions.
#include "support/compare.hpp"
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/infer/generate.hpp"
#include "staticgrad/infer/generation_config.hpp"
#include "staticgrad/infer/kv_decoder.hpp"
#include "staticgrad/models/qwen2_model.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;
using sgtest::rel_err;

namespace {

std::vector<std::int32_t> to_i32(const std::vector<std::int64_t>& v) { return {v.begin(), v.end()}; }

// Row t of a [T, vocab] logits block.
std::vector<float> row(const std::vector<float>& m, std::size_t t, std::size_t vocab) {
  return {m.begin() + std::ptrdiff_t(t * vocab), m.begin() + std::ptrdiff_t((t + 1) * vocab)};
}

}  // namespace

TEST_CASE("the KV-cache decoder's logits equal transformers + PEFT at every position, one token at a time") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    CAPTURE(name);
    const auto fx = sg_fixtures::load_hf_fixture(name);
    auto dec = infer::kv_decoder::load(fx.dir, fx.dir / "adapter");
    const auto V = std::size_t(fx.config.vocab_size);
    for (std::size_t i = 0; i < fx.data.size(); ++i) {
      CAPTURE(i);
      const auto ids = to_i32(fx.data[i].input_ids);
      const auto ref = fx.logits(i);
      dec.truncate(0);
      double worst = 0;
      for (std::size_t t = 0; t < ids.size(); ++t) {
        const auto lg = dec.feed(std::span<const std::int32_t>(&ids[t], 1));
        worst = std::max(worst, rel_err(std::vector<float>(lg.begin(), lg.end()), row(ref, t, V)));
      }
      CHECK(dec.cached() == ids.size());
      CHECK(worst < 1e-4);  // the CPU model's own parity bound with the same fixtures (test_hf_parity)
      // One prefill of the whole line gives the last position's logits too.
      dec.truncate(0);
      const auto lg = dec.feed(ids);
      CHECK(rel_err(std::vector<float>(lg.begin(), lg.end()), row(ref, ids.size() - 1, V)) < 1e-4);
      // Prefill half, then the rest through the cache.
      dec.truncate(0);
      const std::size_t h = ids.size() / 2;
      dec.feed(std::span<const std::int32_t>(ids.data(), h));
      const auto lg2 = dec.feed(std::span<const std::int32_t>(ids.data() + h, ids.size() - h));
      CHECK(rel_err(std::vector<float>(lg2.begin(), lg2.end()), row(ref, ids.size() - 1, V)) < 1e-4);
    }
  }
}

TEST_CASE("the KV-cache decoder agrees with the plan-driven CPU model (models::qwen2_model)") {
  const auto fx = sg_fixtures::load_hf_fixture("tied_v1000_l3_r8_all7_theta1e4");
  auto model = models::qwen2_model<models::qwen2_tiny>::load(fx.dir);
  auto adapter = fx.adapter;
  model->attach(&adapter);
  auto dec = infer::kv_decoder::load(fx.dir, fx.dir / "adapter");
  const auto V = std::size_t(fx.config.vocab_size);
  for (const auto& s : fx.data) {
    const auto ids = to_i32(s.input_ids);
    const auto layout = cpu::make_packed_layout({std::int64_t(ids.size())});
    model->step({ids, {}, layout.view()}, false);
    const auto plan = model->logits(std::int64_t(ids.size()));
    dec.truncate(0);
    for (std::size_t t = 0; t < ids.size(); ++t) {
      const auto lg = dec.feed(std::span<const std::int32_t>(&ids[t], 1));
      CHECK(rel_err(std::vector<float>(lg.begin(), lg.end()), row(plan, t, V)) < 1e-4);
    }
  }
}

TEST_CASE("greedy generate() equals transformers' generate() token for token") {
  const fs::path root = fs::path(STATICGRAD_SOURCE_DIR) / "tests" / "fixtures";
  std::ifstream in(root / "generate" / "cases.json");
  REQUIRE(in);
  const auto doc = nlohmann::json::parse(in);
  REQUIRE(doc["cases"].size() >= 6);
  bool some_stopped = false, some_adapter = false, some_base = false;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["name"];
    CAPTURE(name);
    const fs::path dir = root / "hf" / c["model"].get<std::string>();
    const bool adapter = c["adapter"];
    auto dec = infer::kv_decoder::load(dir, adapter ? dir / "adapter" : fs::path());
    CHECK(dec.has_adapter() == adapter);
    infer::generation_options o;
    o.max_new_tokens = c["max_new_tokens"];
    o.stop_ids = c["eos_token_id"].get<std::vector<std::int32_t>>();
    o.sampling.repetition_penalty = c["repetition_penalty"];
    std::vector<std::int32_t> streamed;
    const auto r = infer::generate(dec, c["prompt_ids"].get<std::vector<std::int32_t>>(), o,
                                   [&](std::int32_t id) { streamed.push_back(id); });
    const auto expected = c["expected_ids"].get<std::vector<std::int32_t>>();
    CHECK(r.ids == expected);
    CHECK(r.stopped == (std::find(o.stop_ids.begin(), o.stop_ids.end(), expected.back()) != o.stop_ids.end()));
    // Streaming reports every token but the stop id.
    CHECK(streamed.size() == r.ids.size() - (r.stopped ? 1 : 0));
    some_stopped |= r.stopped;
    (adapter ? some_adapter : some_base) = true;
  }
  CHECK(some_stopped);
  CHECK(some_adapter);
  CHECK(some_base);
}

TEST_CASE("generation_config.json gives the stop ids and sampling defaults; config.json's eos without it") {
  const auto dir = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");
  const auto cfg = io::read_hf_config(dir);
  const auto g = infer::read_generation_config(dir, cfg);
  CHECK(g.from_file);
  CHECK(g.eos_token_ids == std::vector<std::int32_t>{96});
  CHECK_FALSE(g.sampling.do_sample);

  const fs::path tmp = fs::temp_directory_path() / "sg_generation_config";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const auto none = infer::read_generation_config(tmp, cfg);
  CHECK_FALSE(none.from_file);
  CHECK(none.eos_token_ids == std::vector<std::int32_t>{96});  // config.json's
  // Qwen2.5-Instruct's file.
  std::ofstream(tmp / "generation_config.json")
      << R"({"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],)"
      << R"( "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20})";
  const auto q = infer::read_generation_config(tmp, cfg);
  CHECK(q.eos_token_ids == std::vector<std::int32_t>{151645, 151643});
  CHECK(q.sampling.do_sample);
  CHECK(q.sampling.temperature == doctest::Approx(0.7));
  CHECK(q.sampling.top_p == doctest::Approx(0.8));
  CHECK(q.sampling.top_k == 20);
  CHECK(q.sampling.repetition_penalty == doctest::Approx(1.05));
  std::ofstream(tmp / "generation_config.json") << R"({"temperature": -1})";
  CHECK_THROWS_WITH_AS(infer::read_generation_config(tmp, cfg), doctest::Contains("temperature"), error);
  fs::remove_all(tmp);
}

TEST_CASE("sampling: filters as transformers defines them; seeded draws follow the softmax") {
  using infer::sampling_options;
  const std::vector<float> base = {1.0f, 3.0f, 2.0f, -1.0f, 3.0f, 0.5f};
  std::mt19937_64 rng(1);
  SUBCASE("greedy is the first maximum; repetition penalty divides positives, multiplies negatives") {
    auto s = base;
    CHECK(infer::next_token(s, {}, {}, rng) == 1);
    s = base;
    sampling_options o;
    o.repetition_penalty = 2;
    const std::vector<std::int32_t> ctx = {1, 3, 1};
    CHECK(infer::next_token(s, ctx, o, rng) == 4);
    CHECK(s[1] == 1.5f);
    CHECK(s[3] == -2.0f);
    CHECK(s[0] == 1.0f);
  }
  SUBCASE("top-k keeps ties of the k-th value; top-p keeps the smallest head above the mass") {
    auto s = base;
    sampling_options o;
    o.do_sample = true;
    o.top_k = 2;
    infer::apply_warpers(s, o);
    CHECK(std::count_if(s.begin(), s.end(), [](float x) { return std::isfinite(x); }) == 2);
    s = base;
    o.top_k = 3;
    infer::apply_warpers(s, o);
    CHECK(std::isfinite(s[2]));
    CHECK_FALSE(std::isfinite(s[0]));
    // top-p: probabilities of base; the two 3.0 hold ~0.62, with 2.0 ~0.85.
    double z = 0;
    for (float x : base) z += std::exp(double(x));
    const double p_top2 = 2 * std::exp(3.0) / z;
    s = base;
    o.top_k = 0;
    o.top_p = p_top2 - 1e-3;  // two tokens carry more than top_p: only they stay
    infer::apply_warpers(s, o);
    CHECK(std::count_if(s.begin(), s.end(), [](float x) { return std::isfinite(x); }) == 2);
    s = base;
    o.top_p = p_top2 + 1e-3;  // a third is needed
    infer::apply_warpers(s, o);
    CHECK(std::count_if(s.begin(), s.end(), [](float x) { return std::isfinite(x); }) == 3);
  }
  SUBCASE("the same seed gives the same draws; frequencies match the tempered softmax") {
    sampling_options o;
    o.do_sample = true;
    o.top_k = 0;
    o.temperature = 0.8;
    std::mt19937_64 a(7), b(7);
    std::vector<int> counts(base.size(), 0);
    const int n = 60000;
    for (int i = 0; i < n; ++i) {
      auto s1 = base, s2 = base;
      const auto x = infer::next_token(s1, {}, o, a);
      CHECK(x == infer::next_token(s2, {}, o, b));
      ++counts[std::size_t(x)];
    }
    double z = 0;
    for (float x : base) z += std::exp(double(x) / 0.8);
    for (std::size_t i = 0; i < base.size(); ++i) {
      const double p = std::exp(double(base[i]) / 0.8) / z;
      const double sd = std::sqrt(p * (1 - p) / n);
      CHECK(std::abs(double(counts[i]) / n - p) < 5 * sd + 1e-9);  // 5 standard deviations
    }
  }
}
