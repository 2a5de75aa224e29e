// Failtest: mul<a, e> reads e for da and a for de. With e computed from token ids (no gradient) only e is saved, so silu_ over a afterwards is valid (the _ok build). With e computed from the input x, de is computed, a is saved, and the same silu_ is rejected.
// Entry point: cpu::program<G, double>::backward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"rope_ (y.rope_)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: saved_for_backward_of<staticgrad::fixed_string<8>{"mul (p)"}>
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope_<ref<"a">, 4>
#else
#define SG_MUT rope_<ref<"a">, 4>
#endif

#ifdef SG_FAILTEST_OK
using E = embedding<token_ids<"ids">, frozen_rows<"emb", 8>>;
#else
using E = linear<in<"x", 8>, frozen<"we", 8, 8>>;
#endif
using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 let<"e", E>,
                 out<"p", mul<ref<"a">, ref<"e">>>,
                 out<"y", linear<SG_MUT, frozen<"w2", 8, 8>>>>;

void run_backward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.backward(s);
}

int main() { return 0; }
