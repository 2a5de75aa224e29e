#pragma once
// explain<Graph>(): the compiled plan in words, for people and for tests.
//
// Prints the forward schedule and the backward schedule (one line per kernel,
// naming the ops fused in it and what it writes where), the values saved for
// backward with their bytes per token, and the buffer plan with its peak
// bytes per token. Byte counts use the CUDA storage types: activations and
// their gradients bf16, statistics f32, LoRA Z (width r) bf16.
#include <fmt/format.h>

#include <string>

#include "staticgrad/graph/plan.hpp"

namespace staticgrad::graph {

struct explain_options {
  int lora_rank = 16;        // r, for the bytes of Z = dropout(x) A^T
  std::string title;         // first line
};

namespace detail {

inline std::string slot_text(const slot& s, int r) {
  switch (s.where) {
    case arena::workspace: return fmt::format("workspace@{}", s.offset);
    case arena::saved_act: return fmt::format("saved@{}", s.offset);
    case arena::saved_stat: return fmt::format("saved.f32@{}", s.offset);
    case arena::saved_rank: return fmt::format("saved.rank@{}r", s.offset);
    case arena::external: return "external";
    case arena::scratch: return "in-kernel";
  }
  (void)r;
  return "?";
}

template <int N>
std::string grad_name(const node_table<N>& t, const backward_graph<N>& b, int g) {
  std::string s = "d(";
  bool first = true;
  for (int v = 0; v < t.count; ++v)
    if (b.grad_of[v] == g) {
      s += (first ? "" : "|") + std::string(t.nodes[v].name.view());
      first = false;
    }
  return s + ")";
}

}  // namespace detail

template <class G>
std::string explain(const explain_options& opt = {}) {
  using C = compiled<G>;
  const auto& t = C::table;
  const auto& b = C::backward;
  const auto& f = C::fusion;
  const auto& p = C::buffers;
  const int r = opt.lora_rank;
  std::string o;
  if (!opt.title.empty()) o += opt.title + "\n";
  o += fmt::format("per-token figures; LoRA rank r = {}; bf16 activations and gradients, f32 statistics\n\n", r);

  o += fmt::format("forward schedule ({} kernels)\n", f.n_fwd);
  for (int k = 0; k < f.n_fwd; ++k) {
    const auto& kd = f.fwd[k];
    std::string ops, writes;
    for (int m = 0; m < kd.n; ++m) {
      const int v = kd.members[m];
      ops += (m ? " + " : "") + std::string(node_label(t, v).view());
      if (f.materialized[v])
        writes += fmt::format("{}{} [{}]", writes.empty() ? "" : ", ", t.nodes[v].name.view(), detail::slot_text(p.value[v], r));
      if (t.nodes[v].aux_width && b.saved_aux[v])
        writes += fmt::format("{}{}.aux [{}]", writes.empty() ? "" : ", ", t.nodes[v].name.view(), detail::slot_text(p.aux[v], r));
    }
    o += fmt::format("  f{:<3}{:<15}{}\n", k, kernel_kind_name(kd.kind), ops);
    if (!writes.empty()) o += fmt::format("{:20}-> {}\n", "", writes);
  }

  o += fmt::format("\nbackward schedule ({} kernels)\n", f.n_bwd);
  for (int k = 0; k < f.n_bwd; ++k) {
    const auto& kd = f.bwd[k];
    std::string ops, writes;
    for (int m = 0; m < kd.n; ++m) {
      const auto& s = b.steps[kd.members[m]];
      ops += (m ? " + " : "") + std::string(node_label(t, s.fwd).view()) + " (bwd)";
      for (int j = 0; j < max_inputs; ++j)
        if (s.dx[j] >= 0)
          writes += fmt::format("{}{}{} [{}]", writes.empty() ? "" : ", ", s.acc[j] ? "+=" : "",
                                detail::grad_name(t, b, s.dx[j]), detail::slot_text(p.grad[s.dx[j]], r));
      if (t.nodes[s.fwd].kind == op_kind::lora)
        writes += fmt::format("{}dA, dB of {}", writes.empty() ? "" : ", ", t.nodes[t.nodes[s.fwd].in[1]].name.view());
    }
    o += fmt::format("  b{:<3}{:<15}{}\n", k, kernel_kind_name(kd.kind), ops);
    if (!writes.empty()) o += fmt::format("{:20}-> {}\n", "", writes);
  }

  o += "\nsaved for backward (per layer)\n";
  long total = 0;
  for (int v = 0; v < t.count; ++v) {
    if (b.saved[v]) {
      const long bytes = 2L * t.nodes[v].width;
      total += bytes;
      o += fmt::format("  {:<16}{:<28}bf16 {:>7} B/token  {}{}\n", t.nodes[v].name.view(), node_label(t, v).view(), bytes,
                       detail::slot_text(p.value[v], r),
                       p.value[v].where == arena::external ? " (kept by the caller)" : "");
    }
    if (b.saved_aux[v]) {
      const bool rank = t.nodes[v].aux_rank;
      const long bytes = rank ? 2L * r * t.nodes[v].aux_width : 4L * t.nodes[v].aux_width;
      total += bytes;
      const char* what = t.nodes[v].kind == op_kind::rmsnorm     ? "1/rms"
                         : t.nodes[v].kind == op_kind::attention ? "log-sum-exp"
                                                                 : "Z = dropout(x) A^T";
      o += fmt::format("  {:<16}{:<28}{} {:>7} B/token  {}\n", std::string(t.nodes[v].name.view()) + ".aux", what,
                       rank ? "bf16" : "f32 ", bytes, detail::slot_text(p.aux[v], r));
    }
  }
  o += fmt::format("  total {} B/token per layer ({} B/token in the layer's saved arena, the rest kept by the caller)\n",
                   total, C::saved_bytes_per_token(r));

  if (C::recompute.n > 0) {
    o += "\nrecompute candidates (cheapest first; tier k rebuilds the first k in backward, graph/recompute.hpp)\n";
    for (int i = 0; i < C::recompute.n; ++i) {
      const auto& c = C::recompute.c[i];
      o += fmt::format("  tier {}  {:<14}{:<28}saves {:>6} B/token, moves {:>6} B/token; saved@{}\n", i + 1,
                       t.nodes[c.value].name.view(), node_label(t, c.value).view(), 2L * c.width, 2L * c.moved,
                       p.value[c.value].offset);
    }
    for (int k = 1; k <= C::recompute.n; ++k)
      o += fmt::format("  with tier {}: {} B/token kept per layer\n", k, C::saved_bytes_per_token(r, k));
  }

  o += "\nbuffer plan (workspace shared by all layers; liveness over f0..b" + std::to_string(f.n_bwd - 1) + ")\n";
  auto when = [&](int k) { return k < f.n_fwd ? fmt::format("f{}", k) : fmt::format("b{}", k - f.n_fwd); };
  for (int v = 0; v < t.count; ++v)
    if (!is_leaf(t.nodes[v].kind) && f.materialized[v] && p.value[v].where == arena::workspace)
      o += fmt::format("  {:<26} width {:>6} at {:>6}  live {}..{}{}\n", t.nodes[v].name.view(), t.nodes[v].width,
                       p.value[v].offset, when(p.value[v].def), when(p.value[v].last),
                       p.value[v].owner != v ? fmt::format(" (in place over {})", t.nodes[p.value[v].owner].name.view()) : "");
  for (int g = 0; g < b.n_grads; ++g) {
    if (p.grad[g].where != arena::workspace) {
      o += fmt::format("  {:<26} external (the caller's gradient buffer)\n", detail::grad_name(t, b, g));
      continue;
    }
    o += fmt::format("  {:<26} width {:>6} at {:>6}  live {}..{}\n", detail::grad_name(t, b, g), p.grad[g].width,
                     p.grad[g].offset, when(p.grad[g].def), when(p.grad[g].last));
  }
  o += fmt::format("  workspace peak {} B/token ({} B/token without reuse; forward alone {} B/token)\n",
                   C::workspace_bytes_per_token(), 2L * p.workspace_naive, 2L * p.forward_peak);
  o += fmt::format("  peak per layer: saved {} B/token + shared workspace {} B/token\n", C::saved_bytes_per_token(r),
                   C::workspace_bytes_per_token());
  return o;
}

}  // namespace staticgrad::graph
