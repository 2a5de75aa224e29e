// Failtest: rmsnorm<X, frozen<...>>: the norm weight must be a vec<>.
// Entry point: compiled<G>::table only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: an operand of the op named above is of the wrong kind
// expect: at_op<staticgrad::fixed_string<12>{"rmsnorm (n)"}>
// expect: operand_is<staticgrad::fixed_string<5>{"norm"}, staticgrad::fixed_string<14>{"frozen [8, 8]"}>
// expect: but_op_needs<staticgrad::fixed_string<13>{"vec<name, W>"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT vec<"norm", 8>
#else
#define SG_MUT frozen<"norm", 8, 8>
#endif

using G = graph<out<"n", rmsnorm<in<"x", 8>, SG_MUT>>>;

int main() { return staticgrad::graph::compiled<G>::table.count > 0 ? 0 : 1; }
