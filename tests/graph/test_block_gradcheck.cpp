// End-to-end gradient check of the Qwen2.5 block with LoRA on all seven
// projections: the backward derived by the compiler against central finite
// differences in double, in the tiny shape and in the real 0.5B block shape.
#include "staticgrad/models/qwen2_block.hpp"
#include "support/gradcheck.hpp"

using namespace staticgrad;
using tiny = models::block_shape<128, 384, 4, 2, 32>;
using qwen05 = models::block_shape<896, 4864, 14, 2, 64>;

TEST_CASE("tiny Qwen2.5 block, LoRA on all seven projections, matches finite differences") {
  sgtest::graph_instance<models::qwen2_block<tiny>> g({});
  CHECK(g.check_all() == 1 + 14);
}

TEST_CASE("tiny block with LoRA dropout and rsLoRA-like scaling matches finite differences") {
  sgtest::gradcheck_options o;
  o.cfg.lora_dropout = 0.25f;
  o.cfg.lora_scaling = 0.5f;
  o.lengths = {3, 1, 8};
  sgtest::graph_instance<models::qwen2_block<tiny>> g(o);
  CHECK(g.check_all() == 15);
}

TEST_CASE("tiny block out of place computes the same values and gradients as in place") {
  sgtest::graph_instance<models::qwen2_block<tiny>> a({});
  sgtest::graph_instance<models::qwen2_block<tiny, models::lora_mask::all_seven, false>> b({});
  CHECK(a.loss() == doctest::Approx(b.loss()).epsilon(1e-12));
  a.backward();
  b.backward();
  for (auto& [name, g] : a.grads) {
    INFO(name);
    REQUIRE(b.grads.count(name));
    for (std::size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(b.grads[name][i]).epsilon(1e-10));
  }
}

TEST_CASE("Qwen2.5-0.5B block shape, LoRA on all seven projections, matches finite differences") {
  sgtest::gradcheck_options o;
  o.lengths = {2, 4};
  o.samples_per_tensor = 3;
  sgtest::graph_instance<models::qwen2_block<qwen05>> g(o);
  CHECK(g.check_all() == 15);
}
