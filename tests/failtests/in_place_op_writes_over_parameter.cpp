// Failtest: add_ would write over the frozen bias vector; parameters are read-only.
// Entry point: compiled<G>::find only. The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: writes over a parameter or token ids
// expect: {"add_ (y)"}
// expect: overwrites<staticgrad::fixed_string<2>{"b"}>
// expect: which_is_a_parameter
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT add<vec<"b", 8>, in<"x", 8>>
#else
#define SG_MUT add_<vec<"b", 8>, in<"x", 8>>
#endif

using G = graph<out<"y", SG_MUT>>;

int main() { return staticgrad::graph::compiled<G>::find("y") >= 0 ? 0 : 1; }
