// Failtest: swiglu reads gate for both of its gradients; an in-place activation of gate after it destroys the saved gate.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (g2)"}
// expect: overwrites<staticgrad::fixed_string<5>{"gate"}>
// expect: saved_for_backward_of<staticgrad::fixed_string<11>{"swiglu (m)"}>
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT silu<ref<"gate">>
#else
#define SG_MUT silu_<ref<"gate">>
#endif

using G = graph<let<"gate", linear<in<"x", 8>, frozen<"wg", 16, 8>>>,
                 let<"up", linear<in<"x", 8>, frozen<"wu", 16, 8>>>,
                 out<"m", swiglu<ref<"gate">, ref<"up">>>,
                 out<"g2", SG_MUT>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
