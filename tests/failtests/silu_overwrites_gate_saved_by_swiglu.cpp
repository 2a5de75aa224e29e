// Failtest: swiglu saves gate and up; an in-place activation of gate after it destroys the saved gate.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (g2)"}
// expect: overwrites<staticgrad::fixed_string<5>{"gate"}>
// expect: {"swiglu (m)"}
#include "staticgrad/graph/plan.hpp"

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
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
