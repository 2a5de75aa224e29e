// Failtest: add_ over the graph input x would write the caller's read-only tensor (set_input takes const S*); the out-of-place add gives the sum its own buffer.
// Entry point: cpu::program<G, double>::forward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: writes over a graph input (in<>)
// expect: {"add_ (s)"}
// expect: overwrites<staticgrad::fixed_string<2>{"x"}>
// expect: which_is_a_graph_input
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT add<in<"x", 8>, ref<"a">>
#else
#define SG_MUT add_<in<"x", 8>, ref<"a">>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 let<"s", SG_MUT>,
                 out<"y", linear<ref<"s">, frozen<"w2", 8, 8>>>>;

void run_forward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.forward(s);
}

int main() { return 0; }
