// Parity with Hugging Face transformers + PEFT (fp32), on the committed
// reference fixtures (tests/fixtures/hf, made by scripts/make_hf_fixtures.py):
// logits and the loss to 1e-4 relative, LoRA gradients to 1e-3 relative.
// Each case runs twice: one sequence per batch, and all sequences packed
// into one batch (attention and positions must not cross the boundaries).
#include "support/compare.hpp"
#include <doctest/doctest.h>

#include <cmath>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/models/qwen2_model.hpp"

using namespace staticgrad;
using model_t = models::qwen2_model<models::qwen2_tiny>;

namespace {

using sgtest::rel_err;

std::vector<std::int32_t> to_i32(const std::vector<std::int64_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("loss, logits and LoRA gradients match transformers + PEFT") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    SUBCASE(name.c_str()) {
      auto fx = sg_fixtures::load_hf_fixture(name);
      auto model = model_t::load(fx.dir);
      auto grads = io::make_lora_adapter(fx.adapter.config, fx.config);
      model->attach(&fx.adapter, &grads);

      // One sequence per batch: logits per line, loss and gradients summed.
      double loss_sum = 0;
      std::int64_t counted = 0;
      for (std::size_t i = 0; i < fx.data.size(); ++i) {
        const auto ids = to_i32(fx.data[i].input_ids), labels = to_i32(fx.data[i].labels);
        const auto layout = cpu::make_packed_layout({std::int64_t(ids.size())});
        const auto r = model->step({ids, labels, layout.view()}, true, 1.0 / double(fx.tokens));
        loss_sum += r.loss_sum;
        counted += r.counted;
        INFO("line " << i);
        CHECK(rel_err(model->logits(std::int64_t(ids.size())), fx.logits(i)) < 1e-4);
      }
      CHECK(counted == fx.tokens);
      CHECK(std::abs(loss_sum / double(counted) - fx.loss) / std::abs(fx.loss) < 1e-4);
      int checked = 0;
      for (std::int64_t l = 0; l < fx.config.num_hidden_layers; ++l)
        for (auto t : io::all_lora_targets) {
          if (!fx.has_grad(l, t)) continue;
          INFO("layer " << l << " " << io::target_name(t));
          CHECK(rel_err(grads.at(l, t).a, fx.grad(l, t, 'A')) < 1e-3);
          CHECK(rel_err(grads.at(l, t).b, fx.grad(l, t, 'B')) < 1e-3);
          ++checked;
        }
      CHECK(checked == std::int64_t(fx.adapter.config.target_modules.size()) * fx.config.num_hidden_layers);

      // All sequences packed into one batch: same loss and gradients.
      std::vector<std::int32_t> ids, labels;
      std::vector<std::int64_t> lengths;
      for (const auto& s : fx.data) {
        ids.insert(ids.end(), s.input_ids.begin(), s.input_ids.end());
        labels.insert(labels.end(), s.labels.begin(), s.labels.end());
        lengths.push_back(std::int64_t(s.input_ids.size()));
      }
      auto packed_grads = io::make_lora_adapter(fx.adapter.config, fx.config);
      model->attach(&fx.adapter, &packed_grads);
      const auto layout = cpu::make_packed_layout(lengths);
      const auto r = model->step({ids, labels, layout.view()}, true);
      CHECK(r.counted == fx.tokens);
      CHECK(std::abs(r.mean() - fx.loss) / std::abs(fx.loss) < 1e-4);
      for (std::int64_t l = 0; l < fx.config.num_hidden_layers; ++l)
        for (auto t : fx.adapter.config.target_modules) {
          CHECK(rel_err(packed_grads.at(l, t).a, fx.grad(l, t, 'A')) < 1e-3);
          CHECK(rel_err(packed_grads.at(l, t).b, fx.grad(l, t, 'B')) < 1e-3);
        }
    }
  }
}
