// Failtest: two bindings named h: the error names the second binding, the name and what first defined it.
// Entry point: compiled<G>::workspace_bytes_per_token only (the byte figures). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: is defined twice
// expect: in_binding<staticgrad::fixed_string<9>{"let<\"h\">"}>
// expect: defines_a_name_already_used<staticgrad::fixed_string<2>{"h"}>
// expect: by<staticgrad::fixed_string<11>{"linear (h)"}>
// expect-before-error-under: 2000
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT "h2"
#else
#define SG_MUT "h"
#endif

using G = graph<let<"h", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 let<SG_MUT, rmsnorm<ref<"h">, vec<"norm", 8>>>,
                 out<"y", add<ref<"h">, ref<"h">>>>;

constexpr long workspace = staticgrad::graph::compiled<G>::workspace_bytes_per_token();

int main() { return workspace > 0 ? 0 : 1; }
