// Failtest: bias_add_ would write over a, which the caller reads as a graph output.
// Entry point: cpu::program<G, double>::forward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: writes over a graph output
// expect: {"bias_add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: which_is_a_graph_output
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT bias_add<ref<"a">, vec<"b", 8>>
#else
#define SG_MUT bias_add_<ref<"a">, vec<"b", 8>>
#endif

using G = graph<out<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"y", SG_MUT>>;

void run_forward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.forward(s);
}

int main() { return 0; }
