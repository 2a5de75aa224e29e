// Every op's backward rule, as derived into a plan, against central finite
// differences in double (tests/support/gradcheck.hpp explains the tolerance).
// Each graph puts the op between a linear (so its input requires a gradient)
// and the output, and runs on packed sequences. Here: the norm, RoPE and the
// elementwise ops; the products (linear, LoRA, attention, the LM head), the
// gradient aliasing cases and the embedding are test_ops_gradcheck_matmul.cpp
// (every graph is a program of its own: one TU with all of them took 20.7 s,
// two leave room under the 30 s limit for new ops).
#include "staticgrad/ops/all.hpp"
#include "support/gradcheck.hpp"

using namespace staticgrad::dsl;
using sgtest::gradcheck;

TEST_CASE("rmsnorm") { gradcheck<graph<out<"y", rmsnorm<in<"x", 12>, vec<"norm", 12>>>>>(); }
TEST_CASE("rope, out of place and in place") {
  gradcheck<graph<out<"y", rope<in<"x", 16>, 8>>>>();
  gradcheck<graph<let<"a", linear<in<"x", 16>, frozen<"w", 16, 16>>>, out<"y", linear<rope_<ref<"a">, 8>, frozen<"w2", 16, 16>>>>>();
}
TEST_CASE("swiglu") { gradcheck<graph<out<"y", swiglu<in<"g", 10>, in<"u", 10>>>>>(); }
TEST_CASE("silu and mul") { gradcheck<graph<out<"y", mul<silu<in<"a", 10>>, in<"b", 10>>>>>(); }
TEST_CASE("add and in-place add") {
  gradcheck<graph<out<"y", add<in<"a", 6>, in<"b", 6>>>>>();
  gradcheck<graph<let<"a", linear<in<"x", 6>, frozen<"w", 6, 6>>>, out<"y", add_<ref<"a">, in<"b", 6>>>>>();
}
TEST_CASE("bias_add and in-place bias_add") {
  gradcheck<graph<out<"y", bias_add<in<"x", 6>, vec<"b", 6>>>>>();
  gradcheck<graph<let<"a", linear<in<"x", 6>, frozen<"w", 6, 6>>>, out<"y", linear<bias_add_<ref<"a">, vec<"b", 6>>, frozen<"w2", 6, 6>>>>>();
}
