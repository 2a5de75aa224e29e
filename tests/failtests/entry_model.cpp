// Failtest: silu_ writes over gate, which swiglu saved for its backward, in
// the block graph of a model; only models::qwen2_model<Shape> is used.
// Entry point: the CPU model (models/qwen2_model.hpp), whose block graph is
// models::qwen2_block<Shape>; here a user shape supplies its own block graph
// (a specialisation of qwen2_block_graph). The case writes no static_assert of
// its own: the check runs wherever a plan is used.
// Built twice by ctest (label failtest): with SG_FAILTEST_OK it must compile;
// without, it must fail with every `expect:` line in the compiler's output,
// and with that one error only.
// expect: overwrites a value that the backward pass needs
// expect: {"silu_ (g2)"}
// expect: overwrites<staticgrad::fixed_string<5>{"gate"}>
// expect: saved_for_backward_of<staticgrad::fixed_string<11>{"swiglu (m)"}>
#include "staticgrad/models/qwen2_model.hpp"

using namespace staticgrad::dsl;

#ifdef SG_FAILTEST_OK
#define SG_MUT silu<ref<"gate">>
#else
#define SG_MUT silu_<ref<"gate">>
#endif

struct my_shape : staticgrad::models::block_shape<8, 16, 2, 1, 4> {};

using G = graph<let<"gate", linear<in<"x", 8>, frozen<"wg", 16, 8>>>,
                 let<"up", linear<in<"x", 8>, frozen<"wu", 16, 8>>>,
                 let<"m", swiglu<ref<"gate">, ref<"up">>>,
                 let<"g2", SG_MUT>,
                 out<"y", add<linear<ref<"m">, frozen<"wd", 8, 16>>, linear<ref<"g2">, frozen<"wd2", 8, 16>>>>>;

template <>
struct staticgrad::models::qwen2_block_graph<my_shape, staticgrad::models::lora_mask::all_seven, true> {
  using type = G;
};

int main() { return sizeof(staticgrad::models::qwen2_model<my_shape>) > 0 ? 0 : 1; }
