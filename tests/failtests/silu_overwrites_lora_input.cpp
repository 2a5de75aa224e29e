// Failtest: the LoRA adapter reads its input h for dA = dZ^T dropout(h) (every lora step computes dA); silu_ over h afterwards destroys it.
// Entry point: cpu::program<G, double>::forward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (s)"}
// expect: overwrites<staticgrad::fixed_string<2>{"h"}>
// expect: {"lora (q.lora)"}
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT silu<ref<"h">>
#else
#define SG_MUT silu_<ref<"h">>
#endif

using G = graph<let<"h", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 out<"q", add<linear<ref<"h">, frozen<"w", 8, 8>>, lora<ref<"h">, lora_params<"q_proj", 8, 8>>>>,
                 out<"s", SG_MUT>>;

void run_forward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.forward(s);
}

int main() { return 0; }
