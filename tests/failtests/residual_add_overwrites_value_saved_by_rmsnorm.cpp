// Failtest: add_<h, d> writes the residual sum over h, but rmsnorm h2 saved h for its backward. Writing over d (add_<d, h>) is the valid form.
// Entry point: cpu::program<G, double>::backward only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"h"}>
// expect: {"rmsnorm (h2)"}
#include "staticgrad/backend/cpu/executor.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT add_<ref<"d">, ref<"h">>
#else
#define SG_MUT add_<ref<"h">, ref<"d">>
#endif

using G = graph<let<"h", add<in<"x", 8>, linear<in<"a", 8>, frozen<"wo", 8, 8>>>>,
                 let<"h2", rmsnorm<ref<"h">, vec<"norm", 8>>>,
                 let<"d", linear<ref<"h2">, frozen<"wd", 8, 8>>>,
                 out<"y", SG_MUT>>;

void run_backward(staticgrad::cpu::program<G, double>& p, staticgrad::cpu::program<G, double>::saved_state& s) {
  p.backward(s);
}

int main() { return 0; }
