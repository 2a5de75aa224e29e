// The backward rules of the products (linear, LoRA, attention, the LM head +
// cross-entropy), gradient aliasing and the embedding against central finite
// differences in double: test_ops_gradcheck.cpp's method (the two files are
// one suite split in two TUs; tests/support/gradcheck.hpp).
#include "staticgrad/ops/all.hpp"
#include "support/gradcheck.hpp"

using namespace staticgrad::dsl;
using sgtest::gradcheck;
using sgtest::graph_instance;

TEST_CASE("linear") { gradcheck<graph<out<"y", linear<in<"x", 7>, frozen<"w", 5, 7>>>>>(); }
TEST_CASE("lora alone, with the linear, and with dropout") {
  gradcheck<graph<out<"y", lora<in<"x", 7>, lora_params<"p", 5, 7>>>>>();
  gradcheck<graph<out<"y", add<linear<in<"x", 7>, frozen<"w", 5, 7>>, lora<in<"x", 7>, lora_params<"p", 5, 7>>>>>>();
  sgtest::gradcheck_options o;
  o.cfg.lora_dropout = 0.4f;
  gradcheck<graph<out<"y", add<linear<in<"x", 7>, frozen<"w", 5, 7>>, lora<in<"x", 7>, lora_params<"p", 5, 7>>>>>>(o);
}
TEST_CASE("attention, grouped-query, packed sequences") {
  sgtest::gradcheck_options o;
  o.lengths = {1, 6, 9};
  gradcheck<graph<out<"y", attention<in<"q", 32>, in<"k", 8>, in<"v", 8>, 4, 1, 8>>>>(o);
  gradcheck<graph<out<"y", attention<in<"q", 16>, in<"k", 16>, in<"v", 16>, 2, 2, 8>>>>(o);
}
TEST_CASE("LM head + cross-entropy, with ignored targets") {
  gradcheck<graph<out<"loss", lm_head_cross_entropy<in<"h", 8>, frozen_rows<"lm_head", 8>, token_ids<"targets">>>>>();
}
TEST_CASE("gradient aliasing refused where unsafe is still correct") {
  // d(a) receives both d(y) and b's backward, which reads d(y) (= d(b)).
  gradcheck<graph<let<"a", linear<in<"x", 6>, frozen<"w", 6, 6>>>, let<"b", linear<ref<"a">, frozen<"w2", 6, 6>>>,
                  out<"y", add<ref<"b">, ref<"a">>>>>();
  // A value read by several ops, one of them an add.
  gradcheck<graph<let<"a", linear<in<"x", 6>, frozen<"w", 6, 6>>>, let<"n", rmsnorm<ref<"a">, vec<"g", 6>>>,
                  let<"b", linear<ref<"n">, frozen<"w2", 6, 6>>>, out<"y", add<ref<"a">, ref<"b">>>, out<"z", silu<ref<"a">>>>>();
}
TEST_CASE("embedding gathers rows of the frozen table") {
  using G = graph<out<"y", embedding<token_ids<"ids">, frozen_rows<"table", 4>>>>;
  sgtest::gradcheck_options o;
  graph_instance<G> g(o);
  auto& ids = g.ids["ids"];
  ids[1] = 3;  // the harness writes -100 there for targets; ids must be valid
  g.loss();
  const auto& table = g.tensors["table"];
  const auto& y = g.outputs["y"];
  for (std::int64_t t = 0; t < g.T; ++t)
    for (int j = 0; j < 4; ++j) CHECK(y[t * 4 + j] == table[ids[t] * 4 + j]);
  ids[2] = 999;
  CHECK_THROWS_WITH_AS(g.loss(), doctest::Contains("outside the vocabulary"), staticgrad::error);
}
