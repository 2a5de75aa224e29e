// Failtest: an output computed in place over the graph input x would share the caller's x buffer instead of landing in the caller's y.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: writes over a graph input (in<>)
// expect: {"rope_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"x"}>
// expect: which_is_a_graph_input
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope<in<"x", 8>, 4>
#else
#define SG_MUT rope_<in<"x", 8>, 4>
#endif

using G = graph<out<"y", SG_MUT>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
