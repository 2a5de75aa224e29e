// The HF reference fixtures load through the io layer and are self-consistent:
// logits shapes follow data.jsonl, gradients exist exactly for the targeted
// modules with the weights' shapes, and the loss transformers+PEFT produced is
// reproduced from its own logits with the documented definition
// (sum of token cross-entropy over all lines / counted tokens).
#include <doctest/doctest.h>

#include <cmath>

#include "fixtures/hf/hf_fixture.hpp"
#include "io/io_test_util.hpp"

using namespace staticgrad;
using namespace staticgrad::io;

TEST_CASE("every fixture loads and is consistent") {
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    INFO(name);
    const auto fx = sg_fixtures::load_hf_fixture(name);
    const auto& c = fx.config;
    // Base weights: every name Qwen2 needs, with [out, in] shapes.
    const tensor_view& head = lm_head_weight(fx.weights, c.tie_word_embeddings);
    CHECK(head.shape == std::vector<std::int64_t>{c.vocab_size, c.hidden_size});
    CHECK(fx.weights.at("model.norm.weight").shape == std::vector<std::int64_t>{c.hidden_size});
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight"})
        CHECK(fx.weights.at(p + n).shape == std::vector<std::int64_t>{c.hidden_size});
      CHECK(fx.weights.at(p + "self_attn.q_proj.bias").shape == std::vector<std::int64_t>{c.q_dim()});
      CHECK(fx.weights.at(p + "self_attn.k_proj.bias").shape == std::vector<std::int64_t>{c.kv_dim()});
      CHECK(fx.weights.at(p + "self_attn.v_proj.bias").shape == std::vector<std::int64_t>{c.kv_dim()});
      CHECK(!fx.weights.contains(p + "self_attn.o_proj.bias"));
      for (auto t : all_lora_targets)
        CHECK(fx.weights.at(base_module_name(l, t) + ".weight").shape ==
              std::vector<std::int64_t>{target_out_features(t, c), target_in_features(t, c)});
    }
    // Gradients: exactly the adapter's tensors, same shapes; B and A non-zero.
    std::size_t grads = 0;
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l)
      for (auto t : all_lora_targets) {
        CHECK(fx.has_grad(l, t) == fx.adapter.config.targets(t));
        if (!fx.has_grad(l, t)) continue;
        for (char w : {'A', 'B'}) {
          const tensor_view& g = fx.expected.at(lora_key(l, t, w));
          CHECK(g.shape == (w == 'A' ? std::vector<std::int64_t>{fx.adapter.config.r, target_in_features(t, c)}
                                     : std::vector<std::int64_t>{target_out_features(t, c), fx.adapter.config.r}));
          ++grads;
        }
        double na = 0, nb = 0;
        for (float x : fx.adapter.at(l, t).a) na += std::abs(x);
        for (float x : fx.adapter.at(l, t).b) nb += std::abs(x);
        CHECK(na > 0);
        CHECK(nb > 0);
      }
    CHECK(fx.expected.tensors().size() == grads + fx.data.size() + 4);  // + loss, tokens, line_loss_sum, line_tokens

    // Loss from HF's logits with the documented definition.
    double total = 0;
    std::int64_t counted = 0;
    const auto line_tokens = fx.expected.at("line_tokens");
    const auto line_sums = to_f32(fx.expected.at("line_loss_sum"));
    for (std::size_t i = 0; i < fx.data.size(); ++i) {
      const auto& s = fx.data[i];
      const tensor_view& lg = fx.expected.at("logits." + std::to_string(i));
      const auto n = static_cast<std::int64_t>(s.input_ids.size());
      REQUIRE(lg.shape == std::vector<std::int64_t>{n, c.vocab_size});
      const auto logits = to_f32(lg);
      double line = 0;
      std::int64_t k = 0;
      for (std::int64_t t = 0; t + 1 < n; ++t) {  // logits at t predict labels[t + 1]
        const std::int64_t y = s.labels[static_cast<std::size_t>(t + 1)];
        if (y == -100) continue;
        const float* row = logits.data() + t * c.vocab_size;
        double m = row[0];
        for (std::int64_t v = 1; v < c.vocab_size; ++v) m = std::max<double>(m, row[v]);
        double z = 0;
        for (std::int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(row[v] - m);
        line += m + std::log(z) - row[y];
        ++k;
      }
      std::int64_t kref;
      std::memcpy(&kref, line_tokens.bytes.data() + 8 * i, 8);
      CHECK(k == kref);
      CHECK(line == doctest::Approx(line_sums[i]).epsilon(1e-5));
      total += line;
      counted += k;
    }
    CHECK(counted == fx.tokens);
    CHECK(total / static_cast<double>(counted) == doctest::Approx(fx.loss).epsilon(1e-6));
  }
}
