// Failtest: out<"y", in<"x", 8>> binds a leaf, not an op.
// Entry point: compiled<G>::table only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: must bind an op, not a bare leaf or ref
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"y\">"}>
// expect: binds_a_leaf_or_ref_not_an_op<staticgrad::fixed_string<2>{"y"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope<ref<"a">, 4>
#else
#define SG_MUT ref<"a">
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, out<"y", SG_MUT>>;

int main() { return staticgrad::graph::compiled<G>::table.count > 0 ? 0 : 1; }
