#pragma once
// The planner's view of one CUDA step of Qwen2.5-1.5B at 8 x 2048 tokens, LoRA
// r = 16 on all seven, the default LM-head chunk (2048): the schedules, the
// layout and the byte formula, shared by the memory-plan tests.
#include <cstdint>

#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/models/qwen2_model.hpp"

namespace step_1_5b {

using namespace staticgrad;
using shape = models::qwen2_5_1_5b;
inline constexpr auto& BLK = graph::schedule_of<models::qwen2_block<shape>>;
inline constexpr auto& HEAD = graph::schedule_of<models::qwen2_head_graph<shape::hidden>>;
inline constexpr auto& EMB = graph::schedule_of<models::qwen2_embedding_graph<shape::hidden>>;
inline constexpr int L = 28, H = shape::hidden;
inline constexpr std::int64_t T = 8 * 2048, V = 151936;
inline constexpr graph::step_layout layout{.tokens = T, .layers = L, .vocab = V, .tied = true, .rank = 16, .ce_chunk = 2048};

inline graph::step_bytes bytes(const graph::memory_policy& p) { return graph::cuda_step_bytes(BLK, HEAD, EMB, layout, p); }

}  // namespace step_1_5b
