#pragma once
// What bench_model_step.cu's main and its per-plan translation units
// (model_step_plan.cu.in over bench_model_step_run.cuh, one per size) share:
// the memory request of a run and its result. Plain C++.
#include <cstdint>
#include <string>

namespace bench_model_step {

// The memory request of a run: none (keep everything), a budget, or a policy.
struct memory_request {
  double budget_gib = -1;  // > 0: a budget; 0: free memory less 1 GiB; < 0: none
  int tier = -1, blocks = 0, offload = 0;  // tier >= 0: an explicit policy
};
inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

struct result {
  std::string model;
  bool ok = false;
  int seqs = 0;
  double step_ms = 0, hidden_ms = 0, tok_s = 0, alloc_gib = 0, predicted_gib = 0, used_gib = 0, first_loss = 0, last_loss = 0, host_us = 0;
  double ph[4] = {0, 0, 0, 0};
  std::string plan;
  double slowdown = 1, delta_gib = 0;
};

// One generated TU per size (bench/CMakeLists.txt): run<plans::<size>::model>.
#define SG_BENCH_RUN(P)                                                                                          \
  result run_##P(const char* label, int layers, std::int64_t vocab, bool tied, int seqs, int seq_len, int steps, \
                 std::int64_t chunk, const memory_request& mem);
SG_BENCH_RUN(qwen2_0_5b)
SG_BENCH_RUN(qwen2_1_5b)
SG_BENCH_RUN(qwen2_3b)
SG_BENCH_RUN(qwen2_7b)
#undef SG_BENCH_RUN

}  // namespace bench_model_step
