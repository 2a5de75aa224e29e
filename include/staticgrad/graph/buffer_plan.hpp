#pragma once
// The buffer plan: where every materialised value lives, per token.
//
// Memory is organised in arenas of [T, width] planes (a value of width W at
// offset o occupies elements [T*o, T*(o+W)) of its arena, so every value is a
// contiguous row-major [T, W] tensor):
//   * workspace  - transient forward values and backward gradients, shared by
//                  all layers; a slot is reused once its value is dead
//                  (liveness over the forward+backward kernel timeline);
//   * saved      - values backward reads, one arena per layer, no reuse
//                  (act part, f32 stat part, and a part in units of the LoRA
//                  rank r for Z = dropout(x) A^T);
//   * external   - graph inputs, outputs and their gradients, owned by the
//                  caller (the model's residual stream);
//   * scratch    - values that live only inside one fused kernel (one row).
// An in-place op's output shares its input's slot: that is where in-place ops
// save memory, and why the in-place rule (inplace_check.hpp) must hold.
#include <array>

#include "staticgrad/graph/fusion.hpp"
#include "staticgrad/graph/recompute.hpp"

namespace staticgrad::graph {

enum class arena : std::uint8_t { workspace, saved_act, saved_stat, saved_rank, external, scratch };

constexpr std::string_view arena_name(arena a) {
  switch (a) {
    case arena::workspace: return "workspace";
    case arena::saved_act: return "saved";
    case arena::saved_stat: return "saved/f32";
    case arena::saved_rank: return "saved/rank";
    case arena::external: return "external";
    case arena::scratch: return "scratch";
  }
  return "?";
}

struct slot {
  arena where = arena::scratch;
  int offset = 0;   // elements per token (units of r for saved_rank)
  int width = 0;    // elements per token (units of r for saved_rank)
  int def = 0;      // first kernel (forward i -> i, backward j -> F + j) that writes it
  int last = 0;     // last kernel that reads it
  int owner = -1;   // forward values: the value whose slot this is (in-place chains)
};

template <int N>
struct buffer_plan {
  std::array<slot, N> value{};  // forward values
  std::array<slot, N> aux{};    // aux outputs (stats, LoRA Z)
  std::array<slot, N> grad{};   // gradient values
  int workspace_width = 0;      // peak elements per token of the workspace
  int workspace_naive = 0;      // the same without any reuse (for comparison)
  int forward_peak = 0;         // elements per token of the workspace live during forward
  int saved_act_width = 0;
  int saved_stat_width = 0;
  int saved_rank_width = 0;     // in units of r
  // Recompute tiers (recompute.hpp): with the first k candidates rebuilt in
  // backward, a layer keeps saved act elements [0, keep_act_width[k]); the
  // rest (the candidates, last-tier first) is one region shared by all layers.
  int n_recompute = 0;
  std::array<int, max_recompute + 1> keep_act_width{};
};

namespace detail {

// First-fit offset for [def, last] x width among the already placed slots.
template <int N>
constexpr int first_fit(const std::array<slot, 3 * N>& placed, int n_placed, const slot& s) {
  int offset = 0;
  for (bool moved = true; moved;) {
    moved = false;
    for (int i = 0; i < n_placed; ++i) {
      const auto& o = placed[i];
      const bool time_overlap = !(o.last < s.def || s.last < o.def);
      const bool space_overlap = !(o.offset + o.width <= offset || offset + s.width <= o.offset);
      if (time_overlap && space_overlap) {
        offset = o.offset + o.width;
        moved = true;
      }
    }
  }
  return offset;
}

// A gradient written by a backward row group may take over, element for
// element, the slot of a gradient that dies in the same kernel: each op reads
// a row before it writes it, so with equal widths (element (t, i) of one is
// element (t, i) of the other) and every use of the dying gradient at or
// before the writing op, nothing is read after it is overwritten. Returns the
// reusable offset, or -1.
template <int N>
constexpr int row_local_reuse(const backward_graph<N>& b, const fusion_plan<N>& f, const std::array<slot, 3 * N>& placed,
                              const std::array<int, 3 * N>& placed_grad, int n_placed, const slot& s, int g, int F) {
  const int j = s.def - F;
  if (j < 0 || f.bwd[j].kind != kernel_kind::row_group_bwd) return -1;
  const auto& kd = f.bwd[j];
  int writer = -1;  // member position of the first step writing g
  for (int m = 0; m < kd.n && writer < 0; ++m)
    for (int k = 0; k < max_inputs; ++k)
      if (b.steps[kd.members[m]].dx[k] == g) writer = m;
  for (int i = 0; i < n_placed; ++i) {
    const int o = placed_grad[i];
    if (o < 0 || placed[i].last != s.def || placed[i].width != s.width) continue;
    bool ok = true;
    for (int m = 0; m < kd.n; ++m) {
      const auto& st = b.steps[kd.members[m]];
      bool touches = st.dy == o;
      for (int k = 0; k < max_inputs; ++k) touches = touches || st.dx[k] == o;
      if (touches && m > writer) ok = false;
    }
    for (int q = 0; q < n_placed && ok; ++q) {
      if (q == i) continue;
      const auto& r = placed[q];
      const bool time_overlap = !(r.last < s.def || s.last < r.def);
      const bool space_overlap = !(r.offset + r.width <= placed[i].offset || placed[i].offset + s.width <= r.offset);
      if (time_overlap && space_overlap) ok = false;
    }
    if (ok) return placed[i].offset;
  }
  return -1;
}

}  // namespace detail

template <int N>
constexpr buffer_plan<N> plan_buffers(const node_table<N>& t, const backward_graph<N>& b, const fusion_plan<N>& f,
                                      const recompute_plan<N>& rc = {}) {
  buffer_plan<N> p{};
  if (t.failed()) return p;  // reported by compiled<G>
  const int F = f.n_fwd;
  // ---- forward values: owners through in-place chains
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    p.value[v].owner = v;
    if (n.kind == op_kind::input) {
      p.value[v].where = arena::external;
      p.value[v].width = n.width;
      continue;
    }
    if (is_leaf(n.kind) || !f.materialized[v]) continue;
    if (n.inplace) {
      // Over a graph input, an in-place op gets a slot of its own: the
      // caller's input is never written. (The in-place check rejects such a
      // graph anyway; this keeps even the plan of a rejected graph sound, and
      // so an external class holds exactly one caller buffer: its input, or
      // the output at the end of its chain.)
      const int in = n.in[0];
      if (t.nodes[in].kind != op_kind::input && f.materialized[in]) p.value[v].owner = p.value[in].owner;
    }
  }
  // Class properties: external if any member is an input or output, saved if
  // any member is saved; lifetime over all members.
  std::array<bool, N> ext{}, sav{};
  std::array<int, N> def{}, last{};
  for (int v = 0; v < N; ++v) {
    def[v] = 1 << 29;
    last[v] = -1;
  }
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (is_leaf(n.kind) && n.kind != op_kind::input) continue;
    if (!is_leaf(n.kind) && !f.materialized[v]) continue;
    const int o = p.value[v].owner;
    ext[o] = ext[o] || n.kind == op_kind::input || n.output;
    sav[o] = sav[o] || b.saved[v];
    if (!is_leaf(n.kind)) {
      def[o] = def[o] < f.fwd_kernel_of[v] ? def[o] : f.fwd_kernel_of[v];
      last[o] = last[o] > f.fwd_kernel_of[v] ? last[o] : f.fwd_kernel_of[v];
    }
    for (int r = 0; r < t.count; ++r)
      for (int k = 0; k < t.nodes[r].n_in; ++k)
        if (t.nodes[r].in[k] == v && f.fwd_kernel_of[r] > last[o]) last[o] = f.fwd_kernel_of[r];
  }
  std::array<slot, 3 * N> placed{};
  std::array<int, 3 * N> placed_grad{};  // gradient id of a placed slot, -1 for forward values
  int n_placed = 0;
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (is_leaf(n.kind) || !f.materialized[v]) continue;
    slot s{.width = n.width, .def = def[p.value[v].owner], .last = last[p.value[v].owner], .owner = p.value[v].owner};
    if (p.value[v].owner != v) {  // shares its chain root's slot
      s = p.value[p.value[v].owner];
      s.owner = p.value[v].owner;
      p.value[v] = s;
      continue;
    }
    if (ext[v]) s.where = arena::external;
    else if (sav[v] && rc.tier_of(v) > 0) {
      s.where = arena::saved_act;  // offset below: candidates go last
    } else if (sav[v]) {
      s.where = arena::saved_act;
      s.offset = p.saved_act_width;
      p.saved_act_width += n.width;
    } else {
      s.where = arena::workspace;
      s.offset = detail::first_fit<N>(placed, n_placed, s);
      placed_grad[n_placed] = -1;
      placed[n_placed++] = s;
      p.workspace_naive += n.width;
    }
    p.value[v] = s;
  }
  // Recompute candidates at the end of the saved act arena, last tier first,
  // so that the values of tiers 1..k are the arena's suffix.
  p.n_recompute = rc.n;
  for (int i = rc.n - 1; i >= 0; --i) {
    const int v = rc.c[i].value;
    p.value[v].offset = p.saved_act_width;
    p.saved_act_width += p.value[v].width;
  }
  p.keep_act_width[0] = p.saved_act_width;
  for (int i = 0; i < rc.n; ++i) p.keep_act_width[i + 1] = p.keep_act_width[i] - rc.c[i].width;
  // ---- aux outputs
  for (int v = 0; v < t.count; ++v) {
    const auto& n = t.nodes[v];
    if (n.aux_width == 0) continue;
    slot s{.width = n.aux_width, .owner = v};
    if (b.saved_aux[v]) {
      if (n.aux_rank) {
        s.where = arena::saved_rank;
        s.offset = p.saved_rank_width;
        p.saved_rank_width += n.aux_width;
      } else {
        s.where = arena::saved_stat;
        s.offset = p.saved_stat_width;
        p.saved_stat_width += n.aux_width;
      }
    }
    p.aux[v] = s;
  }
  // ---- gradients
  for (int g = 0; g < b.n_grads; ++g) {
    slot s{.width = t.nodes[b.grad_owner[g]].width, .def = 1 << 29, .last = -1, .owner = b.grad_owner[g]};
    for (int i = 0; i < b.n_steps; ++i) {
      const int k = F + f.step_kernel_of[i];
      const auto& st = b.steps[i];
      if (st.dy == g && k > s.last) s.last = k;
      for (int j = 0; j < max_inputs; ++j)
        if (st.dx[j] == g) {
          if (k < s.def) s.def = k;
          if (k > s.last) s.last = k;
        }
    }
    if (b.grad_external[g]) s.where = arena::external;
    else {
      if (s.def > s.last) s.last = s.def;
      s.where = arena::workspace;
      const int reuse = detail::row_local_reuse<N>(b, f, placed, placed_grad, n_placed, s, g, F);
      s.offset = reuse >= 0 ? reuse : detail::first_fit<N>(placed, n_placed, s);
      placed_grad[n_placed] = g;
      placed[n_placed++] = s;
      p.workspace_naive += s.width;
    }
    p.grad[g] = s;
  }
  for (int i = 0; i < n_placed; ++i) {
    const int end = placed[i].offset + placed[i].width;
    if (end > p.workspace_width) p.workspace_width = end;
    if (placed[i].def < F && end > p.forward_peak) p.forward_peak = end;
  }
  return p;
}

}  // namespace staticgrad::graph
