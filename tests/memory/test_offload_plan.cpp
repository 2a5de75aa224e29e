// Offloading layer inputs to pinned host memory (graph/memory_plan.hpp,
// memory_policy::offload_layers), as the planner sees it: the CUDA step's
// byte formula, the cost model and the choice, on the Qwen2.5-1.5B schedule at
// 8 x 2048 tokens. (The executor's side, bitwise gradients and the measured
// peak, is tests/gpu/test_memory.cu.)
//   * m offloaded inputs leave R = min(m, 3) ring buffers of the residual
//     stream on the device and put max(0, m - 3) of them in host memory;
//   * a copy the layer's compute hides costs nothing, one it does not costs
//     what exceeds it;
//   * the planner offloads only when the budget needs it (a tie in time goes
//     to less offload), prefers a hidden offload to a recompute, and its
//     smallest plan is smaller by the residual stream's offloaded buffers;
//   * without max_offload (the CPU's planner) nothing is offloaded; the CPU
//     model refusing an offload policy is in test_memory_plan.cpp.
#include <doctest/doctest.h>

#include "memory/qwen2_1_5b_step.hpp"

using namespace staticgrad;
using namespace step_1_5b;

namespace {

constexpr double TH2 = double(T) * H * 2;  // one [T, H] bf16 buffer

static_assert(graph::input_width(BLK) == H, "the block's input is the residual stream");
static_assert(graph::residual_buffers(L, {}) == L + 1);
static_assert(graph::residual_buffers(L, {0, 0, 2}) == L + 1, "two offloaded inputs: two ring buffers, nothing saved");
static_assert(graph::residual_buffers(L, {0, 0, L}) == 4, "x_L and the ring of 3");
static_assert(graph::offload_round_trips({0, 0, 3}) == 0 && graph::offload_round_trips({0, 0, L}) == L - 3);

}  // namespace

TEST_CASE("offloaded layer inputs: device and host bytes") {
  const auto keep = bytes({});
  for (int m : {1, 3, 4, 10, L}) {
    CAPTURE(m);
    const auto b = bytes({0, 0, m});
    const int trips = m > 3 ? m - 3 : 0;
    CHECK(keep.residual - b.residual == doctest::Approx(trips * TH2));
    CHECK(b.host_pinned == doctest::Approx(trips * TH2));
    CHECK(keep.total() - b.total() == doctest::Approx(trips * TH2));  // nothing else changes
    CHECK(b.saved == keep.saved);
  }
}

TEST_CASE("offloaded layer inputs: the cost model counts only what compute does not hide") {
  const auto c = graph::layer_costs(BLK, double(T), 2048, 16, graph::device_rates{});
  // One [T, H] bf16 buffer over the host link, against a layer's compute.
  CHECK(c.offload_copy == doctest::Approx(TH2 / graph::device_rates{}.host_link));
  REQUIRE(c.offload_copy < c.forward);  // 50 MB at 25 GB/s (2 ms) inside a 1.5B layer's forward
  CHECK(graph::step_seconds(c, L, {0, 0, L}) == graph::step_seconds(c, L, {}));
  // A slow link: the copies show.
  graph::device_rates slow;
  slow.host_link = 1e9;
  const auto cs = graph::layer_costs(BLK, double(T), 2048, 16, slow);
  const double exposed = (cs.offload_copy - cs.forward) + (cs.offload_copy - cs.backward);
  REQUIRE(exposed > 0);
  CHECK(graph::step_seconds(cs, L, {0, 0, 10}) - graph::step_seconds(cs, L, {}) == doctest::Approx(7 * exposed));
}

TEST_CASE("the planner offloads only when the budget needs it, and before it recomputes") {
  const auto c = graph::layer_costs(BLK, double(T), 2048, 16, graph::device_rates{});
  auto by = [](const graph::memory_policy& p) { return bytes(p).total(); };
  auto secs = [&](const graph::memory_policy& p) { return graph::step_seconds(c, L, p); };
  const double keep = by({});
  // Enough memory: keep everything, offload nothing.
  auto ch = graph::plan_memory(BLK.n_recompute, L, keep, by, secs, L);
  CHECK(ch.fits);
  CHECK(ch.policy == graph::memory_policy{});
  // Ten buffers short: a hidden offload of exactly the inputs needed, no recompute.
  ch = graph::plan_memory(BLK.n_recompute, L, keep - 10 * TH2, by, secs, L);
  CHECK(ch.fits);
  CHECK(ch.policy == graph::memory_policy{0, 0, 13});
  CHECK(ch.slowdown() == 1.0);
  // Without offload (the CPU's planner) the same budget needs a recompute.
  const auto no = graph::plan_memory(BLK.n_recompute, L, keep - 10 * TH2, by, secs);
  CHECK(no.policy.offload_layers == 0);
  CHECK(no.policy != graph::memory_policy{});
  CHECK(no.slowdown() > 1.0);
  // The smallest plan: every block re-run, every input offloaded.
  const auto tiny = graph::plan_memory(BLK.n_recompute, L, 1.0, by, secs, L);
  CHECK_FALSE(tiny.fits);
  // (With every block re-run the tier no longer changes the bytes: the one shared arena holds all of it.)
  CHECK(tiny.policy.block_layers == L);
  CHECK(tiny.policy.offload_layers == L);
  const auto tiny_no = graph::plan_memory(BLK.n_recompute, L, 1.0, by, secs);
  CHECK(tiny_no.bytes - tiny.bytes == doctest::Approx((L - 3) * TH2));
  CHECK(graph::policy_text(BLK, tiny.policy, L).find("the inputs of layers 0..24 wait in pinned host memory") !=
        std::string::npos);
}
