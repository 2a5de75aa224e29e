// Failtest: swiglu<G, U> with gate and up of different widths, through cpu::program.
// Entry point: cpu::program<G, double>::forward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: needs operands of one per-token width
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"y\">"}>
// expect: at_op<staticgrad::fixed_string<18>{"swiglu (y.swiglu)"}>
// expect: operands_differ_in_width<staticgrad::fixed_string<5>{"gate"}, 16, staticgrad::fixed_string<3>{"up"}, 12>
// expect-before-error-under: 4000
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT frozen<"wu", 16, 8>
#else
#define SG_MUT frozen<"wu", 12, 8>
#endif

using G = graph<let<"gate", linear<in<"x", 8>, frozen<"wg", 16, 8>>>,
                 let<"up", linear<in<"x", 8>, SG_MUT>>,
                 out<"y", linear<swiglu<ref<"gate">, ref<"up">>, frozen<"wd", 8, 16>>>>;

void run_forward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.forward(s);
}

int main() { return 0; }
