#pragma once
// compiled<Graph>: every compile-time pass of a graph, in order, as constants.
//
//   lowered      node table (node.hpp), topological order
//   backward     reverse-mode autodiff, gradient aliasing, the saved set
//   in-place     the in-place rule; a violation does not compile
//   fusion       forward and backward kernels
//   buffers      slots per value with liveness-based reuse
//
// Everything here is constexpr: `static_assert(compiled<G>::buffers.saved_act_width == ...)`
// is how tests assert on plans, and executors (backend/cpu, backend/cuda) walk
// the schedules with compile-time indices.
#include "staticgrad/graph/autodiff.hpp"
#include "staticgrad/graph/buffer_plan.hpp"
#include "staticgrad/graph/dsl.hpp"
#include "staticgrad/graph/fusion.hpp"
#include "staticgrad/graph/inplace_check.hpp"
#include "staticgrad/ops/all.hpp"

namespace staticgrad::graph {

template <class G>
struct compiled {
  using graph_type = G;
  static constexpr auto& table = lowered<G>;
  static constexpr int capacity = G::capacity;
  static constexpr backward_graph<capacity> backward = autodiff(table);
  static constexpr in_place_violation violation = find_in_place_violation(table, backward);
  static constexpr bool in_place_ok = report_in_place<table, violation>::ok;
  static constexpr fusion_plan<capacity> fusion = plan_fusion(table, backward);
  static constexpr buffer_plan<capacity> buffers = plan_buffers(table, backward, fusion);

  // Bytes per token with the CUDA storage types (act bf16, stat f32), for a
  // LoRA rank r: what one layer keeps for backward, and the shared workspace.
  static constexpr long saved_bytes_per_token(int r) {
    return 2L * buffers.saved_act_width + 4L * buffers.saved_stat_width + 2L * r * buffers.saved_rank_width;
  }
  static constexpr long workspace_bytes_per_token() { return 2L * buffers.workspace_width; }

  static constexpr int find(std::string_view name) { return table.find(name); }
};

}  // namespace staticgrad::graph
