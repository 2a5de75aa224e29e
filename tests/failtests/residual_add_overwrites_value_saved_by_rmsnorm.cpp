// Failtest: add_<h, d> writes the residual sum over h, but rmsnorm 'h2' saved h for its backward. Writing over d (add_<d, h>) is the valid form.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output.
// expect: overwrites a value that the backward pass needs
// expect: {"add_ (y)"}
// expect: {"h"}
// expect: {"rmsnorm (h2)"}
#include "staticgrad/graph/plan.hpp"

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
static_assert(staticgrad::graph::compiled<G>::in_place_ok);

int main() { return 0; }
