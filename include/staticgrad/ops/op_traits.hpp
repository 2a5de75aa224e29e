#pragma once
// The contract every op header fulfils (ops/<op>.hpp):
//
//   1. a DSL node template (e.g. rmsnorm<X, W>) whose `lower` adds a node_desc
//      after its static shape checks (the checks below, which record a
//      graph_error naming the binding, the op and the values instead of throwing);
//   2. `op_traits<op_kind::K>`: its name, how it fuses (forward and backward),
//      what its backward reads of the forward pass *per input gradient* (and
//      what it reads whenever it runs: LoRA's dA, dB), so that the saved set
//      is the union over the gradients a graph's backward actually computes;
//      which inputs receive gradients and whether that gradient is the output
//      gradient unchanged (then autodiff aliases it instead of running a kernel);
//   3. for pointwise and row ops, `row_forward` / `row_backward` functors over
//      one token's row, used by the CPU fused loops (backend/cpu) and built on
//      element functors that the CUDA fused kernels (backend/cuda) share.
#include <array>
#include <cstdint>
#include <string_view>

#include "staticgrad/core/macros.hpp"
#include "staticgrad/graph/dsl.hpp"
#include "staticgrad/graph/node.hpp"

namespace staticgrad {

// Runtime scalars of a block (they come from config.json and the adapter).
struct runtime_config {
  float eps = 1e-6f;            // RMSNorm epsilon (rms_norm_eps)
  float rope_theta = 1e6f;      // RoPE base (rope_theta)
  float lora_scaling = 1.0f;    // alpha / r, or alpha / sqrt(r) with rsLoRA
  float lora_dropout = 0.0f;    // dropout probability on the LoRA input
  std::uint64_t seed = 0;       // dropout mask seed (with layer and step)
  int layer = 0;                // layer index, mixed into the dropout stream
  int rank = 0;                 // LoRA rank r
};

namespace graph {

// What one backward computation reads of the forward pass.
struct reads_desc {
  std::array<bool, max_inputs> in{};  // input k
  bool out = false;                   // the output
  bool aux = false;                   // the auxiliary output
};

// What an op's backward step reads: `grad[k]` to compute the gradient of
// input k, `always` whenever the step runs (parameter gradients, which every
// step of a lora op computes). The saved set of a graph is the union, over its
// backward steps, of `always` and of grad[k] for each k whose gradient the
// step computes (autodiff.hpp): mul<a, e> with e needing no gradient saves e
// (for da = dy * e), not a.
struct backward_reads {
  std::array<reads_desc, max_inputs> grad{};
  reads_desc always{};
};

// Everything a step may read (the union over backward_reads).
struct saves_desc {
  std::array<bool, max_inputs> in{};
  bool out = false;
  bool aux = false;
};

template <op_kind K>
struct op_traits {
  static_assert(always_false<op_traits>, "op_traits<K> is not specialised: include the op's header from ops/");
};

// Leaves: no compute, no backward of their own.
struct leaf_traits {
  static constexpr fusion_class fusion = fusion_class::leaf;
  static constexpr fusion_class bwd_fusion = fusion_class::leaf;
  static constexpr backward_reads reads{};
  static constexpr std::array<bool, max_inputs> grad_in{};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
template <> struct op_traits<op_kind::input> : leaf_traits { static constexpr std::string_view name = "input"; };
template <> struct op_traits<op_kind::token_ids> : leaf_traits { static constexpr std::string_view name = "token_ids"; };
template <> struct op_traits<op_kind::frozen_matrix> : leaf_traits { static constexpr std::string_view name = "frozen"; };
template <> struct op_traits<op_kind::frozen_vector> : leaf_traits { static constexpr std::string_view name = "vec"; };
template <> struct op_traits<op_kind::lora_adapter> : leaf_traits { static constexpr std::string_view name = "lora_params"; };

// ---- lowering checks ----------------------------------------------------------
// Each records a graph_error under the current binding (the first one wins)
// and returns false; an op's `lower` then returns without adding itself.

// Operands a and b of one op must have the same per-token width.
template <int N>
constexpr bool same_width(node_table<N>& t, std::string_view op, const name_buf& name, int a, int b) {
  if (t.failed()) return false;
  const auto &na = t.nodes[a], &nb = t.nodes[b];
  if (na.width == nb.width && na.rank_width == nb.rank_width) return true;
  t.fail({.kind = graph_error_kind::widths_differ, .op = op_label(op, name.view()), .a = na.name, .b = nb.name,
          .wa = na.width, .wb = nb.width});
  return false;
}

// Operand a must have width `want` (or a multiple of it).
template <int N>
constexpr bool width_is(node_table<N>& t, std::string_view op, const name_buf& name, int a, int want, bool multiple = false) {
  if (t.failed()) return false;
  const int w = t.nodes[a].width;
  if (multiple ? w % want == 0 : w == want) return true;
  t.fail({.kind = multiple ? graph_error_kind::operand_width_multiple : graph_error_kind::operand_width,
          .op = op_label(op, name.view()), .a = t.nodes[a].name, .wa = w, .wb = want});
  return false;
}

// Operand a must be a leaf of kind k (a parameter, or token ids); `expected`
// says what to write, e.g. "vec<name, W>".
template <int N>
constexpr bool kind_is(node_table<N>& t, std::string_view op, const name_buf& name, int a, op_kind k,
                       std::string_view expected) {
  if (t.failed()) return false;
  const auto& n = t.nodes[a];
  if (n.kind == k) return true;
  t.fail({.kind = graph_error_kind::operand_kind, .op = op_label(op, name.view()), .a = n.name,
          .found = is_leaf_kind(n.kind) ? leaf_text(n) : name_buf("an op's output"), .expected = expected});
  return false;
}

// Parameter p (a matrix [Out, In] or a vector [W]) must fit operand x: In
// (or W) equal to x's width.
template <int N>
constexpr bool fits_operand(node_table<N>& t, std::string_view op, const name_buf& name, int p, int x) {
  if (t.failed()) return false;
  const auto &np = t.nodes[p], &nx = t.nodes[x];
  const bool vector = np.kind == op_kind::frozen_vector;
  if ((vector ? np.width : np.cols) == nx.width) return true;
  name_buf want;
  if (vector) want.append("[").append_int(nx.width).append("]");
  else want.append(np.width ? "[Out, " : "[rows, ").append_int(nx.width).append("]");
  name_buf found = leaf_text(np);
  t.fail({.kind = graph_error_kind::parameter_shape, .op = op_label(op, name.view()), .a = np.name, .b = nx.name,
          .wb = nx.width, .found = found, .expected = want});
  return false;
}

}  // namespace graph

// The math of a row op, written once (in its op header) and run by both row
// executors (backend/cpu/row_group.hpp over one token row, backend/cuda/row_group.cuh
// with bf16x2 loads and block reductions). Its shape decides how the
// executors walk a row:
//   pointwise  y_i = forward(a_i, b_i);  backward(dy_i, a_i, b_i, da_i, db_i)
//              (unary ops ignore b; b may be a parameter vector)
//   rotary     pairs (i, i + d/2) of every head of dimension d = the step's attr,
//              rotated by (c, s) = (cos, sin) of angle(pos, i, d, theta), computed
//              once per position and i: forward/backward(x1, x2, c, s, y1, y2)
//   norm       r = inv_rms(sum_i a_i^2, width, eps) (stored as the aux statistic);
//              y_i = forward(a_i, r, b_i); backward with mean = sum_i dot_term / width
enum class row_form : std::uint8_t { pointwise, rotary, norm };

// Registration of a row op's functor: one line per op header,
//   template <> struct row_op<graph::op_kind::silu> : silu_fn {};
// where the functor declares `static constexpr row_form form`.
template <graph::op_kind K>
struct row_op {
  static constexpr bool registered = false;
};
template <graph::op_kind K>
inline constexpr bool is_row_op = !requires { row_op<K>::registered; };

// Writes or accumulates one gradient element.
template <class S>
SG_HD void put_grad(S* d, int i, S v, bool acc) {
  if (acc) d[i] += v;
  else d[i] = v;
}

}  // namespace staticgrad
