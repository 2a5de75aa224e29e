// Failtest: rope_ rotates q in place, but the output op still reads the unrotated q afterwards.
// Entry point: compiled<G>::workspace_bytes_per_token only (the byte figures). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that a later forward op still reads
// expect: {"rope_ (qr)"}
// expect: overwrites<staticgrad::fixed_string<2>{"q"}>
// expect: {"add (y)"}
#include "staticgrad/graph/plan.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT rope<ref<"q">, 4>
#else
#define SG_MUT rope_<ref<"q">, 4>
#endif

using G = graph<let<"q", linear<in<"x", 8>, frozen<"wq", 8, 8>>>,
                 let<"qr", SG_MUT>,
                 out<"y", add<ref<"qr">, ref<"q">>>>;

constexpr long workspace = staticgrad::graph::compiled<G>::workspace_bytes_per_token();

int main() { return workspace > 0 ? 0 : 1; }
