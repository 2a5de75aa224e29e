// Failtest: silu_ writes over gate, which swiglu saved for its backward; only what tools/plan_codegen.cpp reads of compiled<G> for the CUDA plan (table, fusion, backward, buffers, node_label) is used.
// Entry point: what tools/plan_codegen.cpp reads of compiled<G> for the CUDA plan (table, fusion, backward, buffers, node_label). The case writes no static_assert of its own: the
// check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (g2)"}
// expect: overwrites<staticgrad::fixed_string<5>{"gate"}>
// expect: saved_for_backward_of<staticgrad::fixed_string<11>{"swiglu (m)"}>
#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT silu<ref<"gate">>
#else
#define SG_MUT silu_<ref<"gate">>
#endif

using G = graph<let<"gate", linear<in<"x", 8>, frozen<"wg", 16, 8>>>,
                 let<"up", linear<in<"x", 8>, frozen<"wu", 16, 8>>>,
                 out<"m", swiglu<ref<"gate">, ref<"up">>>,
                 out<"g2", SG_MUT>>;

// The reads of tools/plan_codegen.cpp's generate<G>, which writes the CUDA plan.
template <class Graph>
int describe_plan() {
  using C = staticgrad::graph::compiled<Graph>;
  const auto& t = C::table;
  const auto& f = C::fusion;
  const auto& b = C::backward;
  int n = C::buffers.saved_act_width;
  for (int k = 0; k < f.n_fwd; ++k) n += C::buffers.value[f.fwd[k].members[0]].offset;
  for (int i = 0; i < b.n_steps; ++i) n += static_cast<int>(staticgrad::graph::node_label(t, b.steps[i].fwd).view().size());
  return n;
}

int main() { return describe_plan<G>() > 0 ? 0 : 1; }
