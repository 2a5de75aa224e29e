// Failtest: lora<X, lora_params<"q_proj", 8, 16>> over an 8-wide X.
// Entry point: cpu::program<G, double>::forward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: the parameter named above has the wrong shape
// expect: at_op<staticgrad::fixed_string<14>{"lora (q.lora)"}>
// expect: parameter_has_shape<staticgrad::fixed_string<7>{"q_proj"}, staticgrad::fixed_string<20>{"lora_params [8, 16]"}>
// expect: but_op_expects<staticgrad::fixed_string<9>{"[Out, 8]"}>
// expect-before-error-under: 4000
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT lora_params<"q_proj", 8, 8>
#else
#define SG_MUT lora_params<"q_proj", 8, 16>
#endif

using G = graph<let<"h", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 out<"q", add<linear<ref<"h">, frozen<"w", 8, 8>>, lora<ref<"h">, SG_MUT>>>>;

void run_forward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.forward(s);
}

int main() { return 0; }
