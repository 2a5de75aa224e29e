// Failtest: linear<X, frozen<"wq", 16, 4>> over an 8-wide X: the error names the weight, its shape, the expected shape and the operand that fixes it.
// Entry point: compiled<G>::backward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: the parameter named above has the wrong shape
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"q\">"}>
// expect: at_op<staticgrad::fixed_string<11>{"linear (q)"}>
// expect: parameter_has_shape<staticgrad::fixed_string<3>{"wq"}, staticgrad::fixed_string<15>{"frozen [16, 4]"}>
// expect: but_op_expects<staticgrad::fixed_string<9>{"[Out, 8]"}>
// expect: to_fit_operand<staticgrad::fixed_string<2>{"h"}, 8>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT frozen<"wq", 16, 8>
#else
#define SG_MUT frozen<"wq", 16, 4>
#endif

using G = graph<let<"h", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 out<"q", linear<ref<"h">, SG_MUT>>>;

int main() { return staticgrad::graph::compiled<G>::backward.n_steps; }
