#pragma once
// Recompute candidates: saved values that backward can rebuild instead of
// keeping, by re-running the one forward row op that produced them.
//
// A saved value v is a candidate when
//   * its op is a row op (fused into a forward row_group kernel), not in place,
//     not a graph output, and no in-place op writes over it later (its slot is
//     its own);
//   * every operand is a parameter vector, a graph input (kept by the caller),
//     or a saved value that is not itself a candidate (so each recompute reads
//     only what backward has anyway, and one pass rebuilds it).
// For the Qwen2.5 block these are h1 = rmsnorm(x), h2 = rmsnorm(h) and
// m = swiglu(gate, up): 54 KB of the 73 KB per token per layer at 1.5B are
// gate, up and m, and m is rebuilt from gate and up by one pass over the rows.
// (RoPE outputs are not candidates: rope_ writes over the projection's output,
// which is not saved, so rebuilding q needs its GEMM: a whole-block recompute.)
//
// Candidates are ordered cheapest first: elements moved per token by the
// recompute (operands read + value written) per element saved. Recompute
// tier k (0 .. n) rebuilds the first k; the buffer plan puts candidates at the
// END of the saved act arena in reverse order, so the values of tier k are a
// suffix of the arena: a layer keeps [0, keep_width[k]) and the suffix lives in
// one region shared by all layers (it is rebuilt before backward reads it).
// The schedule inserts, for each candidate, a forward row-group entry in the
// backward list just before the first backward entry that reads it (its
// `recompute` field is the candidate's tier); an executor runs it iff its
// memory policy's tier is >= that (graph/memory_plan.hpp chooses the tier).
#include <array>

#include "staticgrad/graph/fusion.hpp"

namespace staticgrad::graph {

inline constexpr int max_recompute = 8;

struct recompute_candidate {
  int value = -1;      // node id of the saved value
  int width = 0;       // elements per token saved by recomputing it
  int moved = 0;       // elements per token read and written by the recompute
};

template <int N>
struct recompute_plan {
  std::array<recompute_candidate, max_recompute> c{};  // cheapest first (moved / width)
  int n = 0;
  constexpr int tier_of(int v) const {  // 1-based tier of value v, 0: not a candidate
    for (int i = 0; i < n; ++i)
      if (c[i].value == v) return i + 1;
    return 0;
  }
};

namespace detail {

template <int N>
constexpr bool recomputable_shape(const node_table<N>& t, const backward_graph<N>& b, const fusion_plan<N>& f, int v) {
  const auto& n = t.nodes[v];
  if (is_leaf(n.kind) || !b.saved[v] || n.inplace || n.output || !f.materialized[v]) return false;
  if (f.fwd[f.fwd_kernel_of[v]].kind != kernel_kind::row_group || n.n_in > 2) return false;
  for (int u = 0; u < t.count; ++u)
    if (t.nodes[u].inplace && t.nodes[u].in[0] == v) return false;  // another value lives in its slot
  return true;
}

}  // namespace detail

template <int N>
constexpr recompute_plan<N> plan_recompute(const node_table<N>& t, const backward_graph<N>& b, const fusion_plan<N>& f) {
  recompute_plan<N> p{};
  if (t.failed()) return p;
  std::array<bool, N> shape_ok{};
  for (int v = 0; v < t.count; ++v) shape_ok[v] = detail::recomputable_shape(t, b, f, v);
  for (int v = 0; v < t.count; ++v) {
    if (!shape_ok[v]) continue;
    const auto& n = t.nodes[v];
    bool ok = true;
    int moved = n.width;
    for (int k = 0; k < n.n_in; ++k) {
      const int x = n.in[k];
      const auto& xn = t.nodes[x];
      if (xn.kind == op_kind::frozen_vector) continue;
      ok = ok && (xn.kind == op_kind::input || (b.saved[x] && !shape_ok[x]));
      moved += xn.width;
    }
    if (!ok) continue;
    if (p.n >= max_recompute) throw "staticgrad: more recompute candidates than max_recompute";
    // Insert ordered by moved / width (cross-multiplied), stable for ties.
    recompute_candidate c{.value = v, .width = n.width, .moved = moved};
    int at = p.n;
    while (at > 0 && long(p.c[at - 1].moved) * c.width > long(c.moved) * p.c[at - 1].width) {
      p.c[at] = p.c[at - 1];
      --at;
    }
    p.c[at] = c;
    ++p.n;
  }
  return p;
}

}  // namespace staticgrad::graph
