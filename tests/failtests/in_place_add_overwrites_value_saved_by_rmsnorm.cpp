// Failtest: rmsnorm saves its input a; an add_ that later writes over a destroys it.
// Entry point: graph::explain<G>() only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: {"rmsnorm (n)"}
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT add<ref<"a">, ref<"n">>
#else
#define SG_MUT add_<ref<"a">, ref<"n">>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 let<"n", rmsnorm<ref<"a">, vec<"norm", 8>>>,
                 out<"y", SG_MUT>>;

int main() { return staticgrad::graph::explain<G>().empty() ? 1 : 0; }
