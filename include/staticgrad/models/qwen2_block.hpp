#pragma once
// The Qwen2.5 decoder block as one type, with LoRA on any subset of its seven
// projections.
//
//   h1 = rmsnorm(x, input_layernorm)
//   q  = rope(q_proj(h1) + b_q),  k = rope(k_proj(h1) + b_k),  v = v_proj(h1) + b_v
//   a  = attention(q, k, v)                       causal, grouped-query
//   h  = x + o_proj(a)                            residual
//   h2 = rmsnorm(h, post_attention_layernorm)
//   m  = silu(gate_proj(h2)) * up_proj(h2)
//   y  = h + down_proj(m)                         residual
// where P(x) = x W^T, plus s * (dropout(x) A^T) B^T when P carries LoRA.
//
// The block is written with in-place ops wherever the in-place rule allows
// (bias and RoPE on the projection outputs, both residual adds); `InPlace =
// false` gives the same block out of place, for comparison (see explain).
#include <type_traits>

#include "staticgrad/graph/plan.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::models {

// The static block shape: everything the compiler must know.
template <int Hidden, int Intermediate, int Heads, int KvHeads, int HeadDim>
struct block_shape {
  static_assert(Heads % KvHeads == 0, "block_shape: Heads must be a multiple of KvHeads (grouped-query attention)");
  static_assert(HeadDim % 2 == 0, "block_shape: HeadDim must be even (RoPE rotates halves)");
  static constexpr int hidden = Hidden, intermediate = Intermediate, heads = Heads, kv_heads = KvHeads,
                       head_dim = HeadDim;
  static constexpr int q_width = Heads * HeadDim, kv_width = KvHeads * HeadDim;
};

// LoRA targets as a bit set over the seven projections (PEFT's module names).
namespace lora_mask {
inline constexpr unsigned q_proj = 1, k_proj = 2, v_proj = 4, o_proj = 8, gate_proj = 16, up_proj = 32,
                          down_proj = 64, none = 0, all_seven = 127, attention_only = 15;
}

namespace detail {
template <class X, fixed_string Weight, fixed_string Adapter, int Out, int In, bool Lora>
using projection = std::conditional_t<Lora, add<linear<X, graph::frozen<Weight, Out, In>>,
                                                lora<X, graph::lora_params<Adapter, Out, In>>>,
                                      linear<X, graph::frozen<Weight, Out, In>>>;

template <bool InPlace, class A, class B> using add_maybe_ = std::conditional_t<InPlace, add_<A, B>, add<A, B>>;
template <bool InPlace, class X, class B> using bias_maybe_ = std::conditional_t<InPlace, bias_add_<X, B>, bias_add<X, B>>;
template <bool InPlace, class X, int D> using rope_maybe_ = std::conditional_t<InPlace, rope_<X, D>, rope<X, D>>;
}  // namespace detail

template <class S, unsigned Targets = lora_mask::all_seven, bool InPlace = true>
struct qwen2_block_graph {
  static constexpr int H = S::hidden, I = S::intermediate, D = S::head_dim, QW = S::q_width, KW = S::kv_width;
  static constexpr bool lq = Targets & lora_mask::q_proj, lk = Targets & lora_mask::k_proj,
                        lv = Targets & lora_mask::v_proj, lo = Targets & lora_mask::o_proj,
                        lg = Targets & lora_mask::gate_proj, lu = Targets & lora_mask::up_proj,
                        ld = Targets & lora_mask::down_proj;
  using x = graph::in<"x", H>;
  using h1 = graph::ref<"h1">;
  template <fixed_string W, fixed_string A, int Out, int In, bool L, class X>
  using proj = detail::projection<X, W, A, Out, In, L>;

  using type = graph::graph<
      graph::let<"h1", rmsnorm<x, graph::vec<"input_layernorm.weight", H>>>,
      graph::let<"q", detail::rope_maybe_<InPlace,
          detail::bias_maybe_<InPlace, proj<"self_attn.q_proj.weight", "self_attn.q_proj", QW, H, lq, h1>,
                              graph::vec<"self_attn.q_proj.bias", QW>>, D>>,
      graph::let<"k", detail::rope_maybe_<InPlace,
          detail::bias_maybe_<InPlace, proj<"self_attn.k_proj.weight", "self_attn.k_proj", KW, H, lk, h1>,
                              graph::vec<"self_attn.k_proj.bias", KW>>, D>>,
      graph::let<"v", detail::bias_maybe_<InPlace, proj<"self_attn.v_proj.weight", "self_attn.v_proj", KW, H, lv, h1>,
                                          graph::vec<"self_attn.v_proj.bias", KW>>>,
      graph::let<"attn", attention<graph::ref<"q">, graph::ref<"k">, graph::ref<"v">, S::heads, S::kv_heads, D>>,
      graph::let<"o", proj<"self_attn.o_proj.weight", "self_attn.o_proj", H, QW, lo, graph::ref<"attn">>>,
      graph::let<"h", detail::add_maybe_<InPlace, graph::ref<"o">, x>>,
      graph::let<"h2", rmsnorm<graph::ref<"h">, graph::vec<"post_attention_layernorm.weight", H>>>,
      graph::let<"gate", proj<"mlp.gate_proj.weight", "mlp.gate_proj", I, H, lg, graph::ref<"h2">>>,
      graph::let<"up", proj<"mlp.up_proj.weight", "mlp.up_proj", I, H, lu, graph::ref<"h2">>>,
      graph::let<"m", swiglu<graph::ref<"gate">, graph::ref<"up">>>,
      graph::let<"down", proj<"mlp.down_proj.weight", "mlp.down_proj", H, I, ld, graph::ref<"m">>>,
      graph::out<"y", detail::add_maybe_<InPlace, graph::ref<"down">, graph::ref<"h">>>>;
};

template <class S, unsigned Targets = lora_mask::all_seven, bool InPlace = true>
using qwen2_block = typename qwen2_block_graph<S, Targets, InPlace>::type;

}  // namespace staticgrad::models
