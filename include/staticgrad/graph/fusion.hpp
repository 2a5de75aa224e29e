#pragma once
// The fusion plan: which ops share one kernel, forward and backward.
//
// Rules (each kernel is one entry of a schedule, run in order):
//   * add<linear<X, W>, lora<X, P>> (the linear and the lora read the same X
//     and feed only the add) is one `lora_linear` kernel: on CUDA the product
//     Y = [X | s Z] [W | B]^T; its backward is one `lora_linear_bwd` kernel
//     (dX = dY [W | B] ..., dA, dB).
//   * consecutive pointwise / row ops form one `row_group` kernel that walks
//     the tokens once and runs every op of the group on each token's row.
//     Merging consecutive row-local ops is always legal: op j at token t reads
//     only rows t of earlier ops. Values produced and consumed inside a group,
//     not saved and not outputs, are never written to memory.
//   * GEMMs (linear, lora) and anchors (attention, embedding, LM head +
//     cross-entropy) are kernels of their own.
// Backward steps fuse the same way (row_group_bwd, lora_linear_bwd).
#include <array>

#include "staticgrad/graph/autodiff.hpp"

namespace staticgrad::graph {

enum class kernel_kind : std::uint8_t {
  row_group, linear, lora, lora_linear, attention, embedding, lm_head_ce,
  row_group_bwd, linear_bwd, lora_bwd, lora_linear_bwd, attention_bwd, lm_head_ce_bwd
};

constexpr std::string_view kernel_kind_name(kernel_kind k) {
  switch (k) {
    case kernel_kind::row_group: return "row_group";
    case kernel_kind::linear: return "gemm";
    case kernel_kind::lora: return "lora";
    case kernel_kind::lora_linear: return "lora_gemm";
    case kernel_kind::attention: return "attention";
    case kernel_kind::embedding: return "embedding";
    case kernel_kind::lm_head_ce: return "lm_head_ce";
    case kernel_kind::row_group_bwd: return "row_group_bwd";
    case kernel_kind::linear_bwd: return "gemm_bwd";
    case kernel_kind::lora_bwd: return "lora_bwd";
    case kernel_kind::lora_linear_bwd: return "lora_gemm_bwd";
    case kernel_kind::attention_bwd: return "attention_bwd";
    case kernel_kind::lm_head_ce_bwd: return "lm_head_ce_bwd";
  }
  return "?";
}

inline constexpr int max_kernel_members = 12;

struct kernel_desc {
  kernel_kind kind = kernel_kind::row_group;
  std::array<int, max_kernel_members> members{};  // forward: node ids; backward: step ids
  int n = 0;
  constexpr void push(int m) {
    if (n >= max_kernel_members) throw "staticgrad: a fused kernel has more ops than max_kernel_members";
    members[n++] = m;
  }
};

template <int N>
struct fusion_plan {
  std::array<kernel_desc, N> fwd{};
  int n_fwd = 0;
  std::array<kernel_desc, N> bwd{};
  int n_bwd = 0;
  std::array<int, N> fwd_kernel_of{};   // node -> forward kernel
  std::array<int, N> step_kernel_of{};  // step -> backward kernel
  std::array<bool, N> materialized{};   // forward value written to memory
  std::array<int, N> lora_partner{};    // linear <-> lora of one lora_linear kernel, else -1
};

namespace detail {

template <int N>
constexpr int consumer_count(const node_table<N>& t, int v) {
  int c = 0;
  for (int r = 0; r < t.count; ++r)
    for (int k = 0; k < t.nodes[r].n_in; ++k) c += t.nodes[r].in[k] == v;
  return c;
}

// If v is the linear (or lora) of an add<linear<X,W>, lora<X,P>> pattern,
// returns the add node, else -1.
template <int N>
constexpr int lora_linear_root(const node_table<N>& t, int v) {
  const op_kind k = t.nodes[v].kind;
  if (k != op_kind::linear && k != op_kind::lora) return -1;
  if (t.nodes[v].output || consumer_count(t, v) != 1) return -1;
  for (int a = v + 1; a < t.count; ++a) {
    const auto& n = t.nodes[a];
    if (n.kind != op_kind::add || n.inplace) continue;
    if (n.in[0] != v && n.in[1] != v) continue;
    const int other = n.in[0] == v ? n.in[1] : n.in[0];
    const op_kind ok = t.nodes[other].kind;
    const bool pair = (k == op_kind::linear && ok == op_kind::lora) || (k == op_kind::lora && ok == op_kind::linear);
    if (!pair || t.nodes[other].output || consumer_count(t, other) != 1) return -1;
    if (t.nodes[other].in[0] != t.nodes[v].in[0]) return -1;
    return a;
  }
  return -1;
}

}  // namespace detail

template <int N>
constexpr fusion_plan<N> plan_fusion(const node_table<N>& t, const backward_graph<N>& b) {
  fusion_plan<N> p{};
  if (t.failed()) return p;  // reported by compiled<G>
  for (int i = 0; i < N; ++i) {
    p.fwd_kernel_of[i] = -1;
    p.step_kernel_of[i] = -1;
    p.lora_partner[i] = -1;
  }
  // ---- forward
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (is_leaf(n.kind) || p.fwd_kernel_of[v] >= 0) continue;
    const auto f = traits_of(n.kind).fusion;
    if (const int a = detail::lora_linear_root(t, v); a >= 0) {
      const int other = t.nodes[a].in[0] == v ? t.nodes[a].in[1] : t.nodes[a].in[0];
      kernel_desc k{.kind = kernel_kind::lora_linear};
      const int lin = n.kind == op_kind::linear ? v : other, lo = n.kind == op_kind::linear ? other : v;
      k.push(lin);
      k.push(lo);
      k.push(a);
      p.lora_partner[lin] = lo;
      p.lora_partner[lo] = lin;
      p.fwd_kernel_of[lin] = p.fwd_kernel_of[lo] = p.fwd_kernel_of[a] = p.n_fwd;
      p.fwd[p.n_fwd++] = k;
      continue;
    }
    if (is_rowwise(f)) {
      if (p.n_fwd > 0 && p.fwd[p.n_fwd - 1].kind == kernel_kind::row_group) {
        p.fwd[p.n_fwd - 1].push(v);
        p.fwd_kernel_of[v] = p.n_fwd - 1;
        continue;
      }
      kernel_desc k{.kind = kernel_kind::row_group};
      k.push(v);
      p.fwd_kernel_of[v] = p.n_fwd;
      p.fwd[p.n_fwd++] = k;
      continue;
    }
    kernel_desc k{};
    switch (n.kind) {
      case op_kind::linear: k.kind = kernel_kind::linear; break;
      case op_kind::lora: k.kind = kernel_kind::lora; break;
      case op_kind::attention: k.kind = kernel_kind::attention; break;
      case op_kind::embedding: k.kind = kernel_kind::embedding; break;
      case op_kind::lm_head_ce: k.kind = kernel_kind::lm_head_ce; break;
      default: throw "staticgrad: an op has no forward kernel kind (internal error)";
    }
    k.push(v);
    p.fwd_kernel_of[v] = p.n_fwd;
    p.fwd[p.n_fwd++] = k;
  }
  // ---- which forward values are written to memory
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (is_leaf(n.kind)) continue;
    bool m = n.output || b.saved[v];
    for (int r = 0; r < t.count; ++r)
      for (int k = 0; k < t.nodes[r].n_in; ++k)
        if (t.nodes[r].in[k] == v && p.fwd_kernel_of[r] != p.fwd_kernel_of[v]) m = true;
    p.materialized[v] = m;
  }
  // ---- backward
  for (int i = 0; i < b.n_steps; ++i) {
    if (p.step_kernel_of[i] >= 0) continue;
    const int v = b.steps[i].fwd;
    const auto& n = t.nodes[v];
    const auto f = traits_of(n.kind).bwd_fusion;
    if (p.lora_partner[v] >= 0) {
      kernel_desc k{.kind = kernel_kind::lora_linear_bwd};
      k.push(i);
      p.step_kernel_of[i] = p.n_bwd;
      for (int j = i + 1; j < b.n_steps; ++j)
        if (b.steps[j].fwd == p.lora_partner[v]) {
          k.push(j);
          p.step_kernel_of[j] = p.n_bwd;
        }
      p.bwd[p.n_bwd++] = k;
      continue;
    }
    if (is_rowwise(f)) {
      if (p.n_bwd > 0 && p.bwd[p.n_bwd - 1].kind == kernel_kind::row_group_bwd) {
        p.bwd[p.n_bwd - 1].push(i);
        p.step_kernel_of[i] = p.n_bwd - 1;
        continue;
      }
      kernel_desc k{.kind = kernel_kind::row_group_bwd};
      k.push(i);
      p.step_kernel_of[i] = p.n_bwd;
      p.bwd[p.n_bwd++] = k;
      continue;
    }
    kernel_desc k{};
    switch (n.kind) {
      case op_kind::linear: k.kind = kernel_kind::linear_bwd; break;
      case op_kind::lora: k.kind = kernel_kind::lora_bwd; break;
      case op_kind::attention: k.kind = kernel_kind::attention_bwd; break;
      case op_kind::lm_head_ce: k.kind = kernel_kind::lm_head_ce_bwd; break;
      default: throw "staticgrad: an op has no backward kernel kind (internal error)";
    }
    k.push(i);
    p.step_kernel_of[i] = p.n_bwd;
    p.bwd[p.n_bwd++] = k;
  }
  return p;
}

}  // namespace staticgrad::graph
