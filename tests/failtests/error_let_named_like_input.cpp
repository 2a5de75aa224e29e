// Failtest: a let named like the graph input x it reads.
// Entry point: compiled<G>::find only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: is defined twice
// expect: defines_a_name_already_used<staticgrad::fixed_string<2>{"x"}>
// expect: by<staticgrad::fixed_string<10>{"input (x)"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT "x2"
#else
#define SG_MUT "x"
#endif

using G = graph<let<SG_MUT, linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", rmsnorm<ref<"x">, vec<"norm", 8>>>>;

int main() { return staticgrad::graph::compiled<G>::find("y") >= 0 ? 0 : 1; }
