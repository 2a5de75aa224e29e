// Failtest: ref<"h2"> reads a value bound by a later let: bindings are evaluated in order.
// Entry point: compiled<G>::table only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: names a value that is bound by this or a later binding
// expect: in_binding<staticgrad::fixed_string<9>{"out<\"y\">"}>
// expect: ref_names_a_value_bound_later<staticgrad::fixed_string<3>{"h2"}>
// expect: by<staticgrad::fixed_string<10>{"let<\"h2\">"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT let<"h2", linear<ref<"h1">, frozen<"w", 8, 8>>>, out<"y", add<ref<"h2">, ref<"h1">>>
#else
#define SG_MUT out<"y", add<ref<"h2">, ref<"h1">>>, let<"h2", linear<ref<"h1">, frozen<"w", 8, 8>>>
#endif

using G = graph<let<"h1", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 SG_MUT>;

int main() { return staticgrad::graph::compiled<G>::table.count > 0 ? 0 : 1; }
