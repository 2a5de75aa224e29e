// evaluate_file and merge on the tiny Hugging Face fixtures (the trainer
// itself: test_trainer.cpp):
//  - evaluate_file (what `staticgrad loss` computes) against transformers;
//  - merge: merged weights equal W + scaling B A (f32 exactly to f32
//    rounding, bf16 to round-to-nearest-even computed independently here),
//    and the merged model's logits equal base + adapter logits.
#include "support/compare.hpp"
#include "support/trainer_fixture.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "staticgrad/train/evaluate.hpp"
#include "staticgrad/train/merge.hpp"

using namespace staticgrad;
using model_t = sgtest::trainer_model;
namespace fs = std::filesystem;

namespace {

using sgtest::qwen_tokenizer;
using sgtest::rel_err;
using sgtest::scratch;

// Round to nearest bf16, ties to even, by comparing the two neighbours
// (independent of core/dtype.hpp's bit trick). Finite inputs only.
float round_bf16(double x) {
  const float f = float(x);  // exact enough: the candidates are bf16 values around f
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t lo_bits = u & 0xffff0000u, hi_bits = lo_bits + 0x10000u;
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  std::memcpy(&hi, &hi_bits, 4);
  const double dl = std::abs(x - lo), dh = std::abs(x - hi);
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return ((lo_bits >> 16) & 1u) ? hi : lo;
}

std::vector<float> all_logits(model_t& m, const std::vector<sg_fixtures::sequence>& data) {
  std::vector<float> out;
  for (const auto& s : data) {
    std::vector<std::int32_t> ids(s.input_ids.begin(), s.input_ids.end());
    const auto layout = cpu::make_packed_layout(std::vector<std::int64_t>{std::int64_t(ids.size())});
    m.step({ids, {}, layout.view()}, false);
    const auto l = m.logits(std::int64_t(ids.size()));
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

}  // namespace

TEST_CASE("evaluate_file: the loss and LoRA gradients of a whole file match transformers + PEFT") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    SUBCASE(name.c_str()) {
      auto fx = sg_fixtures::load_hf_fixture(name);
      auto model = model_t::load(fx.dir);
      auto grads = io::make_lora_adapter(fx.adapter.config, fx.config);
      model->attach(&fx.adapter, &grads);
      const auto file = (fx.dir / "data.jsonl").string();
      const auto xs = train::read_examples(file, qwen_tokenizer());
      // Pack at most 32 tokens per forward so that several forwards add up.
      const auto r = train::evaluate_file(*model, xs, file, true, 32);
      CHECK(r.tokens == fx.tokens);
      CHECK(std::abs(r.mean() - fx.loss) / fx.loss < 1e-4);
      for (std::int64_t l = 0; l < fx.config.num_hidden_layers; ++l)
        for (auto t : fx.adapter.config.target_modules) {
          CHECK(rel_err(grads.at(l, t).a, fx.grad(l, t, 'A')) < 1e-3);
          CHECK(rel_err(grads.at(l, t).b, fx.grad(l, t, 'B')) < 1e-3);
        }
    }
  }
}

TEST_CASE("merge: W + scaling B A in the checkpoint's dtype; merged logits = base + adapter logits") {
  // F32 case: logits to 1e-4. BF16 case: the merged weights are rounded to
  // bf16 (relative error <= 2^-9 per weight), so the logits may differ by
  // about that much times the depth: tolerance 4 * 2^-9 ~ 7.8e-3 (L2
  // relative), and the weights themselves must be exactly the rounded sums.
  for (const auto& name : {std::string("tied_v97_l1_r4_all7"), std::string("untied_v256_l2_r8_rslora_subset")}) {
    SUBCASE(name.c_str()) {
      auto fx = sg_fixtures::load_hf_fixture(name);
      const bool is_bf16 = fx.config.dtype == "bfloat16";
      const auto out = scratch("merge_" + name);
      const auto rep = train::merge_adapter(fx.dir, fx.dir / "adapter", out);
      CHECK(rep.merged == fx.config.num_hidden_layers * std::int64_t(fx.adapter.config.target_modules.size()));
      CHECK(fs::exists(out / "config.json"));
      CHECK(fs::exists(out / "generation_config.json"));
      const auto merged_ck = io::checkpoint::open(out);
      const auto base_ck = io::checkpoint::open(fx.dir);
      CHECK(merged_ck.names() == base_ck.names());
      const double s = fx.adapter.config.scaling();
      for (std::int64_t l = 0; l < fx.config.num_hidden_layers; ++l)
        for (auto t : fx.adapter.config.target_modules) {
          const auto wname = io::base_module_name(l, t) + ".weight";
          const auto& mv = merged_ck.at(wname);
          CHECK(mv.dtype == base_ck.at(wname).dtype);
          const auto w = io::to_f32(base_ck.at(wname)), m = io::to_f32(mv);
          const auto& p = fx.adapter.at(l, t);
          const std::int64_t out_f = io::target_out_features(t, fx.config), in_f = io::target_in_features(t, fx.config);
          const std::int64_t r = fx.adapter.config.r;
          int bad = 0;
          for (std::int64_t o = 0; o < out_f; ++o)
            for (std::int64_t i = 0; i < in_f; ++i) {
              double d = 0;
              for (std::int64_t k = 0; k < r; ++k) d += double(p.b[std::size_t(o * r + k)]) * p.a[std::size_t(k * in_f + i)];
              const double exact = double(w[std::size_t(o * in_f + i)]) + s * d;
              const float want = is_bf16 ? round_bf16(exact) : float(exact);
              bad += m[std::size_t(o * in_f + i)] != want;
            }
          INFO(wname);
          CHECK(bad == 0);
        }
      // Logits.
      auto base = model_t::load(fx.dir);
      base->attach(&fx.adapter);
      const auto ref = all_logits(*base, fx.data);
      auto merged = model_t::load(out);
      auto zero = io::make_lora_adapter(fx.adapter.config, fx.config);
      merged->attach(&zero);
      const auto got = all_logits(*merged, fx.data);
      CHECK(rel_err(got, ref) < (is_bf16 ? 4.0 * std::ldexp(1.0, -9) : 1e-4));
    }
  }
  // Refused: output into the model directory; an adapter for another model.
  const auto a = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");
  const auto b = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset");
  CHECK_THROWS_AS(train::merge_adapter(a, a / "adapter", a), staticgrad::error);
  CHECK_THROWS_AS(train::merge_adapter(a, b / "adapter", scratch("merge_bad")), staticgrad::error);
}
