// Failtest: silu_ writes over g, but silu's own backward needs g (the derivative uses the pre-activation).
// Entry point: compiled<G>::table only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (y.silu_)"}
// expect: overwrites<staticgrad::fixed_string<2>{"g"}>
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT silu<ref<"g">>
#else
#define SG_MUT silu_<ref<"g">>
#endif

using G = graph<let<"g", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", linear<SG_MUT, frozen<"w2", 8, 8>>>>;

int main() { return staticgrad::graph::compiled<G>::table.count > 0 ? 0 : 1; }
