// Failtest: rmsnorm<X, vec<"norm", 16>> over an 8-wide X.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: the parameter named above has the wrong shape
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"n\">"}>
// expect: parameter_has_shape<staticgrad::fixed_string<5>{"norm"}, staticgrad::fixed_string<9>{"vec [16]"}>
// expect: but_op_expects<staticgrad::fixed_string<4>{"[8]"}>
// expect: to_fit_operand<staticgrad::fixed_string<2>{"a"}, 8>
// expect-before-error-under: 2500
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT vec<"norm", 8>
#else
#define SG_MUT vec<"norm", 16>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"n", rmsnorm<ref<"a">, SG_MUT>>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
