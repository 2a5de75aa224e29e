// Failtest: attention reads q for dq and dk (and q, k are computed from an input, so they are); rotating q in place after attention destroys it.
// Entry point: compiled<G>::buffers only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"rope_ (q2)"}
// expect: overwrites<staticgrad::fixed_string<2>{"q"}>
// expect: {"attention (a)"}
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope<ref<"q">, 4>
#else
#define SG_MUT rope_<ref<"q">, 4>
#endif

using G = graph<let<"q", linear<in<"x", 8>, frozen<"wq", 8, 8>>>,
                 let<"k", linear<in<"x", 8>, frozen<"wk", 4, 8>>>,
                 let<"v", linear<in<"x", 8>, frozen<"wv", 4, 8>>>,
                 out<"a", attention<ref<"q">, ref<"k">, ref<"v">, 2, 1, 4>>,
                 out<"q2", SG_MUT>>;

int main() { return staticgrad::graph::compiled<G>::buffers.workspace_width; }
