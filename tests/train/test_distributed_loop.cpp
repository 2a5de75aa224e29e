// Data-parallel training without a GPU (include/staticgrad/train/loop.hpp):
// N CPU-backend loops in threads over an in-process all-reduce
// (tests/support/local_group.hpp) against one loop with grad_accum x N: rank
// r runs the single run's micro-batches m % N == r with the same dropout
// seeds and seed_scale; the losses, eval losses and final adapters agree;
// only rank 0 writes. (The environment and the id exchange: test_distributed.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "support/adapter_compare.hpp"
#include "support/local_group.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/cpu_backend.hpp"
#include "staticgrad/train/demo_task.hpp"
#include "staticgrad/train/loop.hpp"

using namespace staticgrad;
namespace fs = std::filesystem;

namespace {

using model_t = models::qwen2_model<models::qwen2_tiny>;

// The CPU backend, recording what the loop hands it each step.
class recording_backend final : public train::backend {
 public:
  struct step_seen {
    std::vector<std::int32_t> first_ids;  // each micro-batch's first token id
    std::vector<std::int64_t> counted;
    std::vector<std::uint64_t> seeds;
    double seed_scale = 0;
  };
  recording_backend(const fs::path& dir, const train::train_options& o)
      : model_(model_t::load(dir)), inner_(*model_, o.lora, o.optim) {}
  const io::hf_config& config() const override { return inner_.config(); }
  train::backend_features features() const override { return inner_.features(); }
  std::int64_t max_batch_tokens() const override { return 0; }
  void set_adapter(const io::lora_adapter& a) override { inner_.set_adapter(a); }
  io::lora_adapter adapter() override { return inner_.adapter(); }
  void set_optimizer(const train::optimizer_state& s) override { inner_.set_optimizer(s); }
  train::optimizer_state optimizer() override { return inner_.optimizer(); }
  train::step_outputs train_step(const train::step_inputs& in) override {
    step_seen s;
    for (const auto& b : in.micro) s.first_ids.push_back(b.input_ids.front()), s.counted.push_back(b.counted);
    s.seeds.assign(in.dropout_seed.begin(), in.dropout_seed.end());
    s.seed_scale = in.seed_scale;
    seen.push_back(std::move(s));
    return inner_.train_step(in);
  }
  double eval_loss_sum(const train::token_batch& b) override {
    ++evals;
    return inner_.eval_loss_sum(b);
  }
  std::string first_non_finite() override { return inner_.first_non_finite(); }
  std::uint64_t memory_bytes() override { return 0; }

  std::vector<step_seen> seen;
  int evals = 0;

 private:
  std::unique_ptr<model_t> model_;
  train::cpu_backend<models::qwen2_tiny> inner_;
};

struct setup {
  fs::path root, model, data;
  setup() {
    root = fs::path(STATICGRAD_BINARY_DIR) / "train_out" / "distributed";
    fs::remove_all(root);
    fs::create_directories(root);
    train::demo_task d;
    d.lines = 48, d.length = 24, d.seed = 5;
    model = root / "model", data = root / "data.jsonl";
    train::write_demo_checkpoint(model, d);
    train::write_demo_data(data, d);
  }
};
const setup& fixture() {
  static const setup s;
  return s;
}

const io::tokenizer& qwen_tokenizer() {
  static const auto tok = io::tokenizer::from_file(std::string(STATICGRAD_SOURCE_DIR) + "/data/qwen2-tokenizer");
  return tok;
}

train::train_options options(std::int64_t grad_accum, const fs::path& out) {
  train::train_options o;
  o.lora.r = 4, o.lora.lora_alpha = 8, o.lora.lora_dropout = 0.1;  // dropout: the seeds must follow the global m
  o.lora.target_modules = {io::all_lora_targets.begin(), io::all_lora_targets.end()};
  o.steps = 3, o.grad_accum = grad_accum, o.max_len = 24, o.batch_tokens = 48, o.seed = 11;
  o.optim.lr = 1e-2;
  o.eval_files = {fixture().data.string()};
  o.eval_every = 2;
  o.out = out;
  o.log = nullptr;
  return o;
}

struct run_out {
  train::train_result result;
  io::lora_adapter adapter;
  std::vector<recording_backend::step_seen> seen;
  int evals = 0;
};

// `world` ranks (threads), each with grad_accum micro-batches per step; rank r writes to outs[r].
std::vector<run_out> run_group(int world, std::int64_t grad_accum, const std::vector<fs::path>& outs) {
  sgtest::local_group g(world);
  std::vector<run_out> res(static_cast<std::size_t>(world));
  std::vector<std::thread> ts;
  std::vector<std::string> errors(static_cast<std::size_t>(world));
  for (int r = 0; r < world; ++r)
    ts.emplace_back([&, r] {
      try {
        const auto o = options(grad_accum, outs[static_cast<std::size_t>(r)]);
        recording_backend b(fixture().model, o);
        train::training_loop loop(b, qwen_tokenizer(), {fixture().data.string()}, o, world > 1 ? &g.rank(r) : nullptr);
        auto& out = res[static_cast<std::size_t>(r)];
        out.result = loop.run();
        out.adapter = loop.adapter();
        out.seen = b.seen;
        out.evals = b.evals;
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  for (const auto& e : errors) REQUIRE_MESSAGE(e.empty(), e);
  return res;
}

double adapter_rel(const io::lora_adapter& a, const io::lora_adapter& b) { return sgtest::adapter_max_rel(a, b); }

}  // namespace

TEST_CASE("N ranks with grad_accum G equal one process with grad_accum G x N") {
  const auto& fx = fixture();
  for (const auto& [world, accum] : std::vector<std::pair<int, std::int64_t>>{{2, 1}, {2, 2}, {3, 1}}) {
    CAPTURE(world);
    CAPTURE(accum);
    const auto single = run_group(1, accum * world, {fx.root / "single"}).front();
    std::vector<fs::path> outs;
    for (int r = 0; r < world; ++r) outs.push_back(fx.root / ("rank" + std::to_string(r)));
    const auto ranks = run_group(world, accum, outs);

    // Sharding: rank r runs micro-batches m % N == r of the single run's step, same seeds and seed_scale.
    for (int r = 0; r < world; ++r) {
      const auto& rr = ranks[static_cast<std::size_t>(r)];
      REQUIRE(rr.seen.size() == single.seen.size());
      for (std::size_t s = 0; s < single.seen.size(); ++s) {
        const auto& one = single.seen[s];
        const auto& mine = rr.seen[s];
        REQUIRE(mine.first_ids.size() == std::size_t(accum));
        CHECK(mine.seed_scale == one.seed_scale);
        for (std::int64_t k = 0; k < accum; ++k) {
          const std::size_t m = std::size_t(k * world + r);
          CHECK(mine.first_ids[std::size_t(k)] == one.first_ids[m]);
          CHECK(mine.counted[std::size_t(k)] == one.counted[m]);
          CHECK(mine.seeds[std::size_t(k)] == one.seeds[m]);
        }
      }
    }
    // Eval: every batch exactly once over the ranks.
    int evals = 0;
    for (const auto& rr : ranks) evals += rr.evals;
    CHECK(evals == single.evals);

    // Numbers. Step 1 sees the same adapter everywhere: its loss differs only by the
    // double summation order of the micro-batch losses (~1e-16). Later steps and the
    // adapter carry the f32 summation order of the gradients (one process: micro-batch
    // order; the group: each rank's, then rank order), ~1e-7 relative per element;
    // AdamW normalises it away except where g ~ 0. Bound: 1e-5, a hundred f32 ulps.
    for (int r = 0; r < world; ++r) {
      const auto& rr = ranks[static_cast<std::size_t>(r)];
      REQUIRE(rr.result.steps.size() == single.result.steps.size());
      CHECK(rr.result.steps[0].loss == doctest::Approx(single.result.steps[0].loss).epsilon(1e-12));
      for (std::size_t s = 0; s < rr.result.steps.size(); ++s) {
        CHECK(rr.result.steps[s].loss == doctest::Approx(single.result.steps[s].loss).epsilon(1e-5));
        CHECK(rr.result.steps[s].grad_norm == doctest::Approx(single.result.steps[s].grad_norm).epsilon(1e-5));
        CHECK(rr.result.steps[s].tokens == single.result.steps[s].tokens);
      }
      CHECK(rr.result.final_eval_loss == doctest::Approx(single.result.final_eval_loss).epsilon(1e-5));
      const double rel = adapter_rel(rr.adapter, single.adapter);
      MESSAGE("world " << world << " grad_accum " << accum << " rank " << r << ": adapter max rel diff " << rel);
      CHECK(rel < 1e-5);
      // With G = 1 each rank holds one micro-batch's gradient and the group adds them in
      // rank order = micro-batch order, as one process accumulates: the same bits.
      if (accum == 1) CHECK(rel == 0.0);
      CHECK(adapter_rel(rr.adapter, ranks[0].adapter) == 0.0);  // every rank applied the same update
    }

    // Only rank 0 writes (its --out); the other ranks' directories are never created.
    CHECK(fs::exists(outs[0] / "adapter_model.safetensors"));
    CHECK(fs::exists(outs[0] / "metrics.jsonl"));
    CHECK(fs::exists(outs[0] / "training.html"));
    for (int r = 1; r < world; ++r) CHECK_FALSE(fs::exists(outs[static_cast<std::size_t>(r)]));
    for (const auto& p : outs) fs::remove_all(p);
    fs::remove_all(fx.root / "single");
  }
}
