// Failtest: mul saves both factors here (da = dy * x, and x is an input, so dx = dy * a is computed too); writing over a destroys a.
// Entry point: compiled<G>::saved_bytes_per_token only (the byte figures). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"bias_add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"a"}>
// expect: {"mul (p)"}
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT bias_add<ref<"a">, vec<"bias", 8>>
#else
#define SG_MUT bias_add_<ref<"a">, vec<"bias", 8>>
#endif

using G = graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>,
                 out<"p", mul<ref<"a">, in<"x", 8>>>,
                 out<"y", SG_MUT>>;

int main() { return staticgrad::graph::compiled<G>::saved_bytes_per_token(16) > 0 ? 0 : 1; }
