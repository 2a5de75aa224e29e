// Assertions on the compiled plans themselves: schedules, fusion, the saved
// set, gradient aliasing and the buffer plan. The expected values are derived
// here from the block's shapes and Qwen2's structure, not copied from output.
#include <doctest/doctest.h>

#include <string>

#include "staticgrad/graph/explain.hpp"
#include "staticgrad/models/qwen2_block.hpp"

namespace sg = staticgrad;
using namespace staticgrad::dsl;
using sg::graph::kernel_kind;
using qwen05 = sg::models::block_shape<896, 4864, 14, 2, 64>;
using qwen15 = sg::models::block_shape<1536, 8960, 12, 2, 128>;

template <class C>
std::string members(const sg::graph::kernel_desc& k, bool backward = false) {
  std::string s;
  for (int m = 0; m < k.n; ++m) {
    const int v = backward ? C::backward.steps[k.members[m]].fwd : k.members[m];
    s += (m ? " + " : "") + std::string(sg::graph::node_label(C::table, v).view());
  }
  return s;
}

TEST_CASE_TEMPLATE("Qwen2.5 block forward schedule: LoRA fused into its GEMM, bias+RoPE, residual+RMSNorm, SwiGLU", S,
                   qwen05, qwen15) {
  using C = sg::graph::compiled<sg::models::qwen2_block<S>>;
  static_assert(C::in_place_ok);
  REQUIRE(C::fusion.n_fwd == 15);
  const kernel_kind want[] = {kernel_kind::row_group,   kernel_kind::lora_linear, kernel_kind::row_group,
                              kernel_kind::lora_linear, kernel_kind::row_group,   kernel_kind::lora_linear,
                              kernel_kind::row_group,   kernel_kind::attention,   kernel_kind::lora_linear,
                              kernel_kind::row_group,   kernel_kind::lora_linear, kernel_kind::lora_linear,
                              kernel_kind::row_group,   kernel_kind::lora_linear, kernel_kind::row_group};
  for (int k = 0; k < 15; ++k) CHECK(C::fusion.fwd[k].kind == want[k]);
  CHECK(members<C>(C::fusion.fwd[0]) == "rmsnorm (h1)");
  CHECK(members<C>(C::fusion.fwd[1]) == "linear (q.linear) + lora (q.lora) + add (q.add)");
  CHECK(members<C>(C::fusion.fwd[2]) == "bias_add_ (q.bias_add_) + rope_ (q)");
  CHECK(members<C>(C::fusion.fwd[4]) == "bias_add_ (k.bias_add_) + rope_ (k)");
  CHECK(members<C>(C::fusion.fwd[9]) == "add_ (h) + rmsnorm (h2)");
  CHECK(members<C>(C::fusion.fwd[12]) == "swiglu (m)");
  // The biased q before RoPE lives only inside its kernel.
  CHECK_FALSE(C::fusion.materialized[C::find("q.bias_add_")]);
  // The linear and lora halves of a fused projection are never written.
  CHECK_FALSE(C::fusion.materialized[C::find("gate.linear")]);
  CHECK_FALSE(C::fusion.materialized[C::find("gate.lora")]);
}

TEST_CASE_TEMPLATE("Qwen2.5 block backward: derived steps, fused kernels, residual gradient updated in place", S, qwen05,
                   qwen15) {
  using C = sg::graph::compiled<sg::models::qwen2_block<S>>;
  const auto& b = C::backward;
  // 7 projections x (lora + linear) steps, plus rmsnorm x2, rope x2, swiglu, attention.
  CHECK(b.n_steps == 14 + 6);
  REQUIRE(C::fusion.n_bwd == 13);
  CHECK(C::fusion.bwd[0].kind == kernel_kind::lora_linear_bwd);
  CHECK(members<C>(C::fusion.bwd[0], true) == "lora (down.lora) + linear (down.linear)");
  CHECK(members<C>(C::fusion.bwd[1], true) == "swiglu (m)");
  CHECK(members<C>(C::fusion.bwd[4], true) == "rmsnorm (h2)");
  CHECK(C::fusion.bwd[6].kind == kernel_kind::attention_bwd);
  CHECK(members<C>(C::fusion.bwd[12], true) == "rmsnorm (h1)");
  // d(y) flows to d(h), d(down), d(o) and d(x) without a copy: one gradient value.
  const int gy = b.grad_of[C::find("y")];
  CHECK(b.grad_of[C::find("x")] == gy);
  CHECK(b.grad_of[C::find("h")] == gy);
  CHECK(b.grad_of[C::find("o")] == gy);
  CHECK(b.grad_external[gy]);
  // ... which the two RMSNorm backward steps accumulate into (the residual-gradient add).
  int accumulations = 0;
  for (int i = 0; i < b.n_steps; ++i)
    if (C::table.nodes[b.steps[i].fwd].kind == sg::graph::op_kind::rmsnorm) {
      CHECK(b.steps[i].dx[0] == gy);
      CHECK(b.steps[i].acc[0]);
      ++accumulations;
    }
  CHECK(accumulations == 2);
  // gate and up both feed h2: the first writes d(h2), the second accumulates.
  const int gh2 = b.grad_of[C::find("h2")];
  int writes = 0, accs = 0;
  for (int i = 0; i < b.n_steps; ++i)
    for (int k = 0; k < 3; ++k)
      if (b.steps[i].dx[k] == gh2) (b.steps[i].acc[k] ? accs : writes) += 1;
  CHECK(writes == 1);
  CHECK(accs == 3);  // (lora, linear) of up, then of gate: one write, three adds
}

TEST_CASE_TEMPLATE("Qwen2.5 block saved set and its bytes per token", S, qwen05, qwen15) {
  using C = sg::graph::compiled<sg::models::qwen2_block<S>>;
  const char* saved[] = {"x", "h1", "q", "k", "v", "attn", "h", "h2", "gate", "up", "m"};
  int n_saved = 0;
  for (int v = 0; v < C::table.count; ++v) n_saved += C::backward.saved[v];
  CHECK(n_saved == 11);
  for (const char* s : saved) {
    INFO(s);
    CHECK(C::backward.saved[C::find(s)]);
  }
  // bf16 activations; x is the caller's residual stream, the rest is the layer's arena.
  const long H = S::hidden, I = S::intermediate, QW = S::q_width, KW = S::kv_width;
  const long act = 2 * (H /*h1*/ + QW /*q*/ + KW /*k*/ + KW /*v*/ + QW /*attn*/ + H /*h*/ + H /*h2*/ + 3 * I);
  const long stats = 4 * (1 + 1 + S::heads);  // two 1/rms, one log-sum-exp per head
  const int r = 16;
  const long lora_z = 2L * r * 7;           // Z = dropout(x) A^T of the seven adapters
  CHECK(C::saved_bytes_per_token(r) == act + stats + lora_z);
}

TEST_CASE("in-place ops share their input's slot and shrink the workspace") {
  using in_place = sg::graph::compiled<sg::models::qwen2_block<qwen05>>;
  using out_of_place = sg::graph::compiled<sg::models::qwen2_block<qwen05, sg::models::lora_mask::all_seven, false>>;
  // h = o + x in place: h lives in o's slot; y = down + h in place: down is
  // written straight into the caller's output.
  CHECK(in_place::buffers.value[in_place::find("h")].owner == in_place::find("o"));
  CHECK(in_place::buffers.value[in_place::find("down")].where == sg::graph::arena::external);
  CHECK(out_of_place::buffers.value[out_of_place::find("down")].where == sg::graph::arena::workspace);
  // Every value the out-of-place block keeps in the workspace and the
  // in-place one does not: o, down and v.add (each its own slot there).
  const int saved_widths = 896 + 896 + 128;
  CHECK(out_of_place::buffers.workspace_naive - in_place::buffers.workspace_naive == saved_widths);

  // A small graph where the in-place form lowers the forward peak.
  using oop = sg::graph::compiled<graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, let<"b", rope<ref<"a">, 4>>,
                                    out<"y", linear<ref<"b">, frozen<"w2", 8, 8>>>>>;
  using ip = sg::graph::compiled<graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, let<"b", rope_<ref<"a">, 4>>,
                                   out<"y", linear<ref<"b">, frozen<"w2", 8, 8>>>>>;
  CHECK(oop::buffers.forward_peak == 16);
  CHECK(ip::buffers.forward_peak == 8);
}

TEST_CASE("gradients are aliased only where no later accumulation can leak into another owner") {
  // y = a + b with a also read before: d(a) may alias d(y) only if the
  // accumulation from the earlier reader comes after every read of d(b).
  using C = sg::graph::compiled<graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, let<"n", rmsnorm<ref<"a">, vec<"g", 8>>>,
                                  let<"b", linear<ref<"n">, frozen<"w2", 8, 8>>>, out<"y", add<ref<"a">, ref<"b">>>>>;
  const auto& b = C::backward;
  // b's producer reads d(b) before the rmsnorm backward adds into d(a): safe to share.
  CHECK(b.grad_of[C::find("a")] == b.grad_of[C::find("y")]);
  // The opposite order: the extra reader of a comes after b is computed.
  using D = sg::graph::compiled<graph<let<"a", linear<in<"x", 8>, frozen<"w", 8, 8>>>, let<"b", linear<ref<"a">, frozen<"w2", 8, 8>>>,
                                  out<"y", add<ref<"b">, ref<"a">>>>>;
  // d(b) = d(y) aliased; d(a) gets both d(y) (identity) and b's backward: it
  // must not share the buffer that b's backward still reads.
  CHECK(D::backward.grad_of[D::find("b")] == D::backward.grad_of[D::find("y")]);
  CHECK(D::backward.grad_of[D::find("a")] != D::backward.grad_of[D::find("y")]);
}

TEST_CASE("explain names every kernel, the saved values and the peak") {
  const std::string e = sg::graph::explain<sg::models::qwen2_block<qwen05>>({16, "Qwen2.5-0.5B block"});
  CHECK(e.find("forward schedule (15 kernels)") != std::string::npos);
  CHECK(e.find("backward schedule (13 kernels)") != std::string::npos);
  CHECK(e.find("bias_add_ (q.bias_add_) + rope_ (q)") != std::string::npos);
  CHECK(e.find("add_ (h) + rmsnorm (h2)") != std::string::npos);
  CHECK(e.find("log-sum-exp") != std::string::npos);
  CHECK(e.find("workspace peak") != std::string::npos);
}

TEST_CASE_TEMPLATE("a backward row group writes a gradient over the one it consumes", S, qwen05, qwen15) {
  using C = sg::graph::compiled<sg::models::qwen2_block<S>>;
  const auto& b = C::backward;
  const auto& g = C::buffers.grad;
  // swiglu backward reads d(m) and writes d(gate) in the same place, row by row.
  CHECK(g[b.grad_of[C::find("gate")]].offset == g[b.grad_of[C::find("m")]].offset);
  CHECK(g[b.grad_of[C::find("gate")]].where == sg::graph::arena::workspace);
  // RoPE backward likewise over d(q) and d(k).
  CHECK(g[b.grad_of[C::find("q.bias_add_")]].offset == g[b.grad_of[C::find("q")]].offset);
  // The peak is then d(gate), d(up) and d(h2) side by side (bf16).
  CHECK(C::workspace_bytes_per_token() == 2L * (2 * S::intermediate + S::hidden));
}
