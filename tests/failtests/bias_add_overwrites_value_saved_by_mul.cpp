// Failtest: mul saves both factors (da = dy * b, db = dy * a); writing over a destroys one.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
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
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
