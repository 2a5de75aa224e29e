#pragma once
// lora<X, lora_params<"q_proj", Out, In>>: the LoRA update of one projection,
//   y = s * (dropout(x) A^T) B^T,  A [r, In], B [Out, r] trainable (f32),
// s = alpha / r (or alpha / sqrt(r), rsLoRA) from runtime_config. The rank r
// is a runtime value. The aux output Z = dropout(x) A^T [T, r] is saved for dB.
// Backward (dy [T, Out]):
//   dB = s dy^T Z,  dZ = s dy B,  dA = dZ^T dropout(x),  dx += mask * (dZ A).
// dx reads no forward value (dZ comes from dy and B); dA reads x and dB reads
// Z, and every lora step computes dA and dB, so x and Z are always saved.
// The dropout mask is not saved: it is a hash of (seed, layer, adapter,
// token, feature), recomputed in backward.
//
// Written next to a linear of the same input, add<linear<X, W>, lora<X, P>>
// fuses into one GEMM: Y = [X | s Z] [W | B]^T (fusion.hpp).
#include <cstdint>

#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class P>
struct lora_node {
  static constexpr std::string_view op_name = "lora";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), p = lower_child<P>(t, name.view());
    if (!kind_is(t, op_name, name, p, op_kind::lora_adapter, "lora_params<name, Out, In>") ||
        !fits_operand(t, op_name, name, p, x))
      return 0;
    return t.add({.kind = op_kind::lora, .name = name, .in = {x, p, -1}, .n_in = 2, .width = t.nodes[p].width,
                  .aux_width = 1, .aux_rank = true, .aux_store = storage::act});
  }
};

template <> struct op_traits<op_kind::lora> {
  static constexpr std::string_view name = "lora";
  static constexpr fusion_class fusion = fusion_class::gemm;
  static constexpr fusion_class bwd_fusion = fusion_class::gemm;
  static constexpr backward_reads reads{.always = {.in = {true, false, false}, .aux = true}};  // dA: x; dB: Z
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class P> using lora = graph::lora_node<X, P>;

// Counter-based dropout: keep element (t, i) of adapter `stream` iff its hash
// is at or above p. Deterministic in (seed, layer, stream, t, i), so backward
// recomputes the mask instead of saving it. splitmix64 finaliser as the mixer.
struct dropout_fn {
  SG_HD static std::uint64_t mix(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 bits.
  SG_HD static float uniform(std::uint64_t seed, std::uint64_t stream, std::int64_t t, int i) {
    const std::uint64_t h = mix(seed ^ mix(stream ^ mix(static_cast<std::uint64_t>(t) * 0x100000001b3ull + static_cast<std::uint64_t>(i))));
    return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  }
  // The multiplier of element (t, i): 0 (dropped) or 1 / (1 - p) (kept).
  SG_HD static float scale(float p, std::uint64_t seed, std::uint64_t stream, std::int64_t t, int i) {
    if (p <= 0.0f) return 1.0f;
    return uniform(seed, stream, t, i) >= p ? 1.0f / (1.0f - p) : 0.0f;
  }
};

// A stable 64-bit id of an adapter name (FNV-1a), the dropout stream.
constexpr std::uint64_t adapter_stream(std::string_view name, int layer) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h ^ (static_cast<std::uint64_t>(layer) << 48);
}

}  // namespace staticgrad
