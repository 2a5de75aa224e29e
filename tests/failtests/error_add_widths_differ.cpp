// Failtest: add<A, B> of an 8-wide and a 16-wide value: the error names the binding, the op, both operands and both widths.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: staticgrad graph error: the op named above needs operands of one per-token width
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"y\">"}>
// expect: at_op<staticgrad::fixed_string<8>{"add (y)"}>
// expect: operands_differ_in_width<staticgrad::fixed_string<2>{"a"}, 8, staticgrad::fixed_string<9>{"y.linear"}, 16>
// expect-before-error-under: 2500
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT frozen<"w2", 8, 8>
#else
#define SG_MUT frozen<"w2", 16, 8>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", add<ref<"a">, linear<in<"x", 8>, SG_MUT>>>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
