// Failtest: bias_add_ already wrote over a; a second in-place op reading a sees the biased values. Chaining through b is the valid form.
// Entry point: compiled<G>::fusion only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that a later forward op still reads
// expect: {"bias_add_ (b)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: {"rope_ (y)"}
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope_<ref<"b">, 4>
#else
#define SG_MUT rope_<ref<"a">, 4>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 let<"b", bias_add_<ref<"a">, vec<"bias", 8>>>,
                 out<"y", SG_MUT>>;

int main() { return staticgrad::graph::compiled<G>::fusion.n_fwd > 0 ? 0 : 1; }
