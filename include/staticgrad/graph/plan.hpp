#pragma once
// compiled<Graph>: every compile-time pass of a graph, in order, as constants.
//
//   lowered      node table (node.hpp), topological order; a malformed graph
//                is a compile error here (graph_errors.hpp)
//   backward     reverse-mode autodiff, gradient aliasing, the saved set
//   in-place     the in-place rule; a violation is a compile error here
//   fusion       forward and backward kernels
//   buffers      slots per value with liveness-based reuse
//
// Both checks are static_asserts of the class body, so they run whenever
// compiled<G> is instantiated, i.e. whenever anything names one of its members:
// explain<G>(), cpu::program<G, S>, tools/plan_codegen, the byte figures, the
// models. There is no unchecked way to use a plan. A malformed graph is
// reported first and alone: its passes see an empty graph.
//
// Everything here is constexpr: `static_assert(compiled<G>::buffers.saved_act_width == ...)`
// is how tests assert on plans, and executors (backend/cpu, backend/cuda) walk
// the schedules with compile-time indices.
#include "staticgrad/graph/autodiff.hpp"
#include "staticgrad/graph/buffer_plan.hpp"
#include "staticgrad/graph/dsl.hpp"
#include "staticgrad/graph/fusion.hpp"
#include "staticgrad/graph/graph_errors.hpp"
#include "staticgrad/graph/inplace_check.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::graph {

template <class G>
struct compiled {
  using graph_type = G;
  static constexpr auto& table = lowered<G>;
  // Naming the size of a diagnostic type instantiates it: its static_assert
  // carries the message (the outer assertion itself always holds).
  static_assert(sizeof(graph_error_t<table>) > 0, "staticgrad: the graph is malformed (diagnosis above)");
  static constexpr int capacity = G::capacity;
  static constexpr backward_graph<capacity> backward = autodiff(table);
  static constexpr in_place_violation violation = find_in_place_violation(table, backward);
  static_assert(sizeof(in_place_error_t<table, violation>) > 0, "staticgrad: in-place misuse (diagnosis above)");
  // True for every compiled<G> that compiles (kept for code that asserts it).
  static constexpr bool in_place_ok = violation.problem == in_place_problem::none;
  static constexpr fusion_plan<capacity> fusion = plan_fusion(table, backward);
  static constexpr recompute_plan<capacity> recompute = plan_recompute(table, backward, fusion);
  static constexpr buffer_plan<capacity> buffers = plan_buffers(table, backward, fusion, recompute);

  // Bytes per token with the CUDA storage types (act bf16, stat f32), for a
  // LoRA rank r: what one layer keeps for backward, and the shared workspace.
  static constexpr long saved_bytes_per_token(int r) {
    return 2L * buffers.saved_act_width + 4L * buffers.saved_stat_width + 2L * r * buffers.saved_rank_width;
  }
  // The same with recompute tier k (recompute.hpp): the first k candidates are
  // not kept per layer (they live in one region shared by all layers).
  static constexpr long saved_bytes_per_token(int r, int tier) {
    return saved_bytes_per_token(r) - 2L * (buffers.saved_act_width - buffers.keep_act_width[tier]);
  }
  static constexpr long workspace_bytes_per_token() { return 2L * buffers.workspace_width; }

  static constexpr int find(std::string_view name) { return table.find(name); }
};

}  // namespace staticgrad::graph
