// The LM-head chunk as a memory-plan decision (graph/memory_plan.hpp,
// memory_policy::lm_head_chunk), as the planner sees it on the Qwen2.5-1.5B
// schedule at 8 x 2048 tokens. (The executor's side, the measured peak of the
// chosen plans and the gradients under a smaller chunk, is tests/gpu/test_memory.cu.)
//   * the chunk a policy runs: its own, else the step's ce_chunk option,
//     rounded up to 128 and at most the token stride;
//   * the bytes: 6 C V of scratch, nothing else changes with C;
//   * the cost: the head's work is the same for every C; each extra chunk
//     adds launches, and a product whose tiles leave a wave part empty pays
//     for the whole wave (dX's output tiles split 4 ways over V);
//   * the planner: keeps the option's chunk while the budget allows, halves
//     it when that is the cheapest way to fit (here: before a block re-run), and its smallest
//     plan uses 128-token chunks; without a chunk to choose (the CPU) it
//     never sets one.
#include <doctest/doctest.h>

#include "memory/qwen2_1_5b_step.hpp"

using namespace staticgrad;
using namespace step_1_5b;

namespace {

constexpr graph::memory_policy chunk(std::int64_t c) { return {0, 0, 0, c}; }

static_assert(graph::lm_head_chunk_tokens(2048, T, {}) == 2048, "the option's chunk");
static_assert(graph::lm_head_chunk_tokens(2048, T, chunk(512)) == 512, "the policy's chunk");
static_assert(graph::lm_head_chunk_tokens(2048, T, chunk(200)) == 256, "rounded up to 128");
static_assert(graph::lm_head_chunk_tokens(2048, 300, {}) == 384, "at most the token stride");
static_assert(graph::lm_head_chunk_tokens(0, T, {}) == 128, "a chunk of at least one tile");

}  // namespace

TEST_CASE("LM-head chunk: 6 C V bytes of scratch, nothing else") {
  const auto keep = bytes({});
  CHECK(keep.lm_head_chunk == doctest::Approx(2048.0 * V * 6));
  for (std::int64_t c : {1024, 512, 256, 128}) {
    CAPTURE(c);
    const auto b = bytes(chunk(c));
    CHECK(b.lm_head_chunk == doctest::Approx(double(c) * V * 6));
    CHECK(keep.total() - b.total() == doctest::Approx((2048.0 - double(c)) * V * 6));
  }
}

TEST_CASE("LM-head chunk: the cost model charges launches and partial waves, not the work") {
  const graph::device_rates d{};
  // The work: two products of 2 T H V FLOPs and 12 T V bytes, whatever C is.
  const double work = 2 * 2.0 * double(T) * H * double(V) / d.gemm_flops + 12.0 * double(T) * double(V) / d.bytes;
  double last = 0;
  for (std::int64_t c : {2048, 512, 256, 128}) {
    CAPTURE(c);
    const double t = graph::lm_head_seconds(double(T), H, double(V), c, d);
    CHECK(t >= work);
    CHECK(t >= last);  // smaller chunks never cost less
    last = t;
  }
  // 8 chunks of 2048: forward 16 x 1187 tiles in 144 waves, dX 16 x 12 x 4 in
  // 6. 128 chunks of 128: dX's 12 x 4 tiles fill 48 of 132 SMs, so that
  // product takes 132 / 48 times its work.
  const double dx = 2.0 * double(T) * H * double(V) / d.gemm_flops;
  CHECK(graph::lm_head_seconds(double(T), H, double(V), 2048, d) - work ==
        doctest::Approx(dx * (792.0 / 768 - 1) + dx * (144.0 * 132 / 18992 - 1) + 8 * 3 * d.launch));
  CHECK(graph::lm_head_seconds(double(T), H, double(V), 128, d) - work ==
        doctest::Approx(dx * (132.0 / 48 - 1) + dx * (1188.0 / 1187 - 1) + 128 * 3 * d.launch));
  // Widths whose tiles fill the SMs' waves exactly pay only for the launches:
  // forward 1 x 132 tiles, dX 1 x 33 x 4.
  const double Vw = 128.0 * d.sms, Hw = 33 * 128;
  const double exact = graph::lm_head_seconds(1024, Hw, Vw, 128, d);
  CHECK(exact == doctest::Approx(2 * 2.0 * 1024 * Hw * Vw / d.gemm_flops + 12.0 * 1024 * Vw / d.bytes + 8 * 3 * d.launch));
  // One tile more than a wave in the forward product: it pays for a second, nearly empty wave.
  const double over = graph::lm_head_seconds(128, Hw, Vw + 128, 128, d);
  const double fwd = 2.0 * 128 * Hw * (Vw + 128) / d.gemm_flops;
  CHECK(over == doctest::Approx(fwd * (2.0 * d.sms / (d.sms + 1)) + fwd + 12.0 * 128 * (Vw + 128) / d.bytes + 3 * d.launch));
  // step_seconds adds the head under each policy's chunk; without with_lm_head it adds nothing.
  const auto c0 = graph::layer_costs(BLK, double(T), 2048, 16, d);
  const auto c = graph::with_lm_head(c0, T, H, V, 2048, d);
  const double t2048 = graph::lm_head_seconds(double(T), H, double(V), 2048, d);
  const double t128 = graph::lm_head_seconds(double(T), H, double(V), 128, d);
  CHECK(graph::step_seconds(c, L, {}) - graph::step_seconds(c0, L, {}) == doctest::Approx(t2048));
  CHECK(graph::step_seconds(c, L, chunk(128)) - graph::step_seconds(c, L, {}) == doctest::Approx(t128 - t2048));
  CHECK(graph::step_seconds(c0, L, chunk(128)) == graph::step_seconds(c0, L, {}));
}

TEST_CASE("the planner halves the LM-head chunk when that is the cheapest way to fit") {
  const graph::device_rates d{};
  const auto c = graph::with_lm_head(graph::layer_costs(BLK, double(T), 2048, 16, d), T, H, V, 2048, d);
  auto by = [](const graph::memory_policy& p) { return bytes(p).total(); };
  auto secs = [&](const graph::memory_policy& p) { return graph::step_seconds(c, L, p); };
  const double keep = by({});
  const std::int64_t c0 = graph::lm_head_chunk_tokens(layout.ce_chunk, T, {});
  // Enough memory: the option's chunk.
  auto ch = graph::plan_memory(BLK.n_recompute, L, keep, by, secs, L, c0);
  CHECK(ch.policy == graph::memory_policy{});
  // 0.85 GiB short (a 1024-token chunk saves 0.87), with no recompute tier and
  // no offload: the choice is a smaller chunk or re-running two blocks (the
  // re-run layers share one arena, so n of them save n - 1 layers' saved
  // values, 1.1 GiB each), whichever the model says is cheaper.
  const double short_budget = keep - 0.85 * double(1 << 30);
  ch = graph::plan_memory(0, L, short_budget, by, secs, 0, c0);
  REQUIRE(ch.fits);
  const double halve = secs(chunk(1024)), rerun = secs({0, 2, 0});
  REQUIRE(by(chunk(1024)) <= short_budget);
  REQUIRE(by({0, 2, 0}) <= short_budget);
  CHECK(halve < rerun);  // at 1.5B: a few ms of launches and partial waves against a layer's forward
  CHECK(ch.policy == chunk(1024));
  CHECK(ch.seconds == halve);
  CHECK(graph::policy_text(BLK, ch.policy, L).find("the LM head in chunks of 1024 tokens") != std::string::npos);
  // Without a chunk to choose, the same budget costs a block re-run.
  const auto fixed = graph::plan_memory(0, L, short_budget, by, secs, 0);
  CHECK(fixed.policy == graph::memory_policy{0, 2, 0});
  CHECK(fixed.seconds > ch.seconds);
  // The smallest plan: 128-token chunks, and smaller by what they save.
  const auto tiny = graph::plan_memory(BLK.n_recompute, L, 1.0, by, secs, L, c0);
  const auto tiny_fixed = graph::plan_memory(BLK.n_recompute, L, 1.0, by, secs, L);
  CHECK_FALSE(tiny.fits);
  CHECK(tiny.policy.lm_head_chunk == 128);
  CHECK(tiny_fixed.bytes - tiny.bytes == doctest::Approx((2048.0 - 128) * V * 6));
  // An option below 256 tokens leaves nothing to halve.
  const auto small = graph::plan_memory(BLK.n_recompute, L, 1.0, by, secs, L, 128);
  CHECK(small.policy.lm_head_chunk == 0);
}
