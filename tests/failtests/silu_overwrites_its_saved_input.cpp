// Failtest: silu_ writes over g, but silu's own backward needs g (the derivative uses the pre-activation).
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
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
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
