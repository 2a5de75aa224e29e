// A graph written with the DSL: an RMSNorm + SwiGLU MLP with LoRA on the gate
// projection and an in-place residual add. Prints the compiled plan.
// (The README shows the same graph.)
#include <cstdio>

#include "staticgrad/graph/explain.hpp"

using namespace staticgrad::dsl;

using mlp = graph<
    let<"h", rmsnorm<in<"x", 896>, vec<"norm", 896>>>,
    let<"g", add<linear<ref<"h">, frozen<"gate", 4864, 896>>, lora<ref<"h">, lora_params<"gate_lora", 4864, 896>>>>,
    let<"u", linear<ref<"h">, frozen<"up", 4864, 896>>>,
    out<"y", add_<linear<swiglu<ref<"g">, ref<"u">>, frozen<"down", 896, 4864>>, in<"x", 896>>>>;

static_assert(staticgrad::graph::compiled<mlp>::in_place_ok, "the in-place residual add is valid here");

int main() {
  std::puts(staticgrad::graph::explain<mlp>({16, "RMSNorm + SwiGLU MLP with LoRA on the gate"}).c_str());
  return 0;
}
