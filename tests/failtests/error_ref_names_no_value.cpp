// Failtest: ref<"hh"> (a typo for h1) names nothing: the error names the binding, the name, and the values in scope.
// Entry point: compiled<G>::saved_bytes_per_token only (the byte figures). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: ref<Name> names no value
// expect: in_binding<staticgrad::fixed_string<9>{"let<\"q\">"}>
// expect: ref_names_no_value<staticgrad::fixed_string<3>{"hh"}>
// expect: values_in_scope_are<staticgrad::fixed_string<6>{"x, h1"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT ref<"h1">
#else
#define SG_MUT ref<"hh">
#endif

using G = graph<let<"h1", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 let<"q", linear<SG_MUT, frozen<"wq", 8, 8>>>,
                 out<"y", add<ref<"q">, ref<"h1">>>>;

int main() { return staticgrad::graph::compiled<G>::saved_bytes_per_token(16) > 0 ? 0 : 1; }
