// Failtest: the input x used with two widths.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: a leaf name is used twice with different kinds or shapes
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"y\">"}>
// expect: uses_leaf<staticgrad::fixed_string<2>{"x"}>
// expect: as<staticgrad::fixed_string<8>{"in [16]"}>
// expect: but_it_was_first_used_as<staticgrad::fixed_string<7>{"in [8]"}>
// expect-before-error-under: 2500
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT in<"x", 8>
#else
#define SG_MUT in<"x", 16>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", add<ref<"a">, SG_MUT>>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
