// Failtest: attention<Q, K, V, 2, 1, 4> with a 12-wide Q (Heads * HeadDim = 8).
// Entry point: compiled<G>::saved_bytes_per_token only (the byte figures). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: the op needs the other width named above
// expect: at_op<staticgrad::fixed_string<14>{"attention (a)"}>
// expect: operand_has_width<staticgrad::fixed_string<2>{"q"}, 12>
// expect: but_op_needs_width<8>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT frozen<"wq", 8, 8>
#else
#define SG_MUT frozen<"wq", 12, 8>
#endif

using G = graph<let<"q", linear<in<"x", 8>, SG_MUT>>,
                 let<"k", linear<in<"x", 8>, frozen<"wk", 4, 8>>>,
                 let<"v", linear<in<"x", 8>, frozen<"wv", 4, 8>>>,
                 out<"a", attention<ref<"q">, ref<"k">, ref<"v">, 2, 1, 4>>>;

int main() { return staticgrad::graph::compiled<G>::saved_bytes_per_token(16) > 0 ? 0 : 1; }
