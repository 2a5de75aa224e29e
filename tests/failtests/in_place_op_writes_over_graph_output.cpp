// Failtest: bias_add_ would write over a, which the caller reads as a graph output.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
// expect: writes over a graph output
// expect: {"bias_add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: which_is_a_graph_output
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;


#ifdef SG_FAILTEST_OK
#define SG_MUT bias_add<ref<"a">, vec<"b", 8>>
#else
#define SG_MUT bias_add_<ref<"a">, vec<"b", 8>>
#endif

using G = graph<out<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", SG_MUT>>;
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
