// Failtest: rmsnorm saves its input x; an add_ that later writes over x destroys it.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
// expect: overwrites a value that the backward pass needs
// expect: {"add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"x"}>
// expect: {"rmsnorm (n)"}
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;


#ifdef SG_FAILTEST_OK
#define SG_MUT add<in<"x", 8>, ref<"n">>
#else
#define SG_MUT add_<in<"x", 8>, ref<"n">>
#endif

using G = graph<let<"n", rmsnorm<in<"x", 8>, vec<"norm", 8>>>,
                 out<"y", SG_MUT>>;
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
