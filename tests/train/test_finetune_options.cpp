// `staticgrad finetune` fails before training, with exit status 1 and the
// flag's name, on every bad option; --out is probed before anything is
// loaded; a non-finite step names the step and the first non-finite LoRA
// tensor; the schedule options (--steps 1, --epochs, --warmup-ratio,
// --min-lr-ratio), several --data files and --config YAML (the command line
// winning over the file; OUT/config.yaml reads back to the same run);
// --memory-budget on the CPU (the plan printed, a budget between the
// smallest plan and keeping everything recomputes and gives bit-identical
// losses, one below the smallest plan fails naming the flag).
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fixtures/hf/hf_fixture.hpp"
#include <nlohmann/json.hpp>

#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/train/metrics.hpp"
#include "support/memory_line.hpp"
#include "support/run_tool.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::have_tool;
const fs::path fixture = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");

test::run_result run(const std::string& args) { return test::run_command("'" + tool + "' " + args + " 2>&1"); }

fs::path scratch(const std::string& name) {
  auto p = fs::path(STATICGRAD_BINARY_DIR) / "options_out" / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

// The required options only (a case must not repeat a flag: CLI11 refuses that itself).
std::string base(const fs::path& out) {
  const std::string d = fixture.string();
  return "finetune --model " + d + " --data " + d + "/data.jsonl --out " + out.string();
}
const std::string small = " --batch-tokens 128 --max-len 64 --lora-r 4 --target-modules q_proj,v_proj";

}  // namespace

TEST_CASE("finetune: every bad option exits 1 naming its flag, before anything is written") {
  if (!have_tool()) return;
  const auto out = scratch("bad");
  const std::pair<std::string, std::string> cases[] = {
      {"--lr abc", "--lr"},
      {"--lr nan", "--lr"},
      {"--lr -1", "--lr"},
      {"--max-grad-norm nan", "--max-grad-norm"},
      {"--max-grad-norm -1", "--max-grad-norm"},
      {"--weight-decay -0.5", "--weight-decay"},
      {"--lora-r 0", "--lora-r"},
      {"--lora-r 1000000", "--lora-r"},
      {"--lora-alpha 0", "--lora-alpha"},
      {"--lora-dropout 1", "--lora-dropout"},
      {"--lora-dropout nan", "--lora-dropout"},
      {"--steps 0", "--steps"},
      {"--steps -3", "--steps"},
      {"--grad-accum 0", "--grad-accum"},
      {"--max-len 1", "--max-len"},
      {"--max-len 1024", "max_position_embeddings"},  // the fixture's limit is 512
      {"--max-len 100000000", "--max-len"},
      {"--batch-tokens 0", "--batch-tokens"},
      {"--warmup-steps -1", "--warmup-steps"},
      {"--warmup-ratio 1.5", "--warmup-ratio"},
      {"--min-lr-ratio 0", "--min-lr-ratio"},
      {"--epochs -1", "--epochs"},
      {"--steps 5 --epochs 2", "--epochs"},
      {"--save-every -1", "--save-every"},
      {"--eval-every 2", "--eval-every"},  // without --eval-data
      {"--schedule sideways", "schedule"},
      {"--device tpu", "--device"},
      {"--gpus 2", "--gpus"},  // --device cpu
      {"--gpus 0", "--gpus"},
      {"--target-modules lm_head", "lm_head"},
      {"--resume " + (out / "nothing").string(), "--resume"},
      {"--memory-budget -1", "--memory-budget"},
      {"--memory-budget nan", "--memory-budget"},
      {"--memory-budget 1e9", "--memory-budget"},
  };
  for (const auto& [flags, named] : cases) {
    INFO(flags);
    const auto r = run(base(out) + " " + flags);
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find(named) != std::string::npos);
    CHECK(r.out.find("At Most 1") == std::string::npos);  // the case itself is well formed
    CHECK(r.out.find("lora_r") == std::string::npos);     // never an internal field name
  }
  CHECK(!fs::exists(out / "adapter_model.safetensors"));
}

TEST_CASE("finetune under a launcher: a bad RANK / WORLD_SIZE is named; several ranks need --device cuda") {
  if (!have_tool()) return;
  const auto out = scratch("ranks");
  const std::pair<std::string, std::string> cases[] = {
      {"WORLD_SIZE=2 RANK=5 STATICGRAD_NCCL_ID_FILE=/tmp/x", "environment variable RANK"},
      {"WORLD_SIZE=two RANK=0", "environment variable WORLD_SIZE"},
      {"WORLD_SIZE=2", "RANK is not"},
      {"WORLD_SIZE=2 RANK=1", "MASTER_ADDR and MASTER_PORT"},
      {"WORLD_SIZE=2 RANK=1 STATICGRAD_NCCL_ID_FILE=/tmp/x", "runs on CUDA only"},
      {"WORLD_SIZE=2 RANK=0 STATICGRAD_NCCL_ID_FILE=/tmp/x STATICGRAD_NCCL_TIMEOUT=-1", "STATICGRAD_NCCL_TIMEOUT"},
  };
  for (const auto& [env, named] : cases) {
    INFO(env);
    const auto r = test::run_command(env + " '" + tool + "' " + base(out) + small + " --steps 1 2>&1");
    INFO(r.out);
    CHECK(r.rc == 1);
    CHECK(r.out.find(named) != std::string::npos);
  }
  CHECK(!fs::exists(out / "adapter_model.safetensors"));
}

TEST_CASE("finetune: --out must be a writable directory, checked before the model is loaded") {
  if (!have_tool()) return;
  const auto dir = scratch("out_checks");
  fs::create_directories(dir);
  { std::ofstream(dir / "a_file") << "x"; }
  auto r = run(base(dir / "a_file") + small);
  CHECK(r.rc == 1);
  CHECK(r.out.find("--out") != std::string::npos);
  r = run(base("/proc/staticgrad-out") + small);
  CHECK(r.rc == 1);
  CHECK(r.out.find("--out") != std::string::npos);
  if (::geteuid() != 0) {  // root writes through permissions
    fs::create_directories(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    r = run(base(dir / "ro" / "out") + small);
    CHECK(r.rc == 1);
    CHECK(r.out.find("--out") != std::string::npos);
    fs::permissions(dir / "ro", fs::perms::owner_all);
  }
}

TEST_CASE("finetune: a non-finite step names the step and the first non-finite LoRA tensor") {
  if (!have_tool()) return;
  // The fixture with a down_proj weight so large that the MLP output overflows f32.
  const auto model = scratch("overflow_model");
  fs::create_directories(model);
  for (const auto* f : {"config.json", "generation_config.json"}) fs::copy_file(fixture / f, model / f);
  io::safetensors_file st(fixture / "model.safetensors");
  std::vector<std::vector<float>> keep;
  std::vector<io::tensor_data> ts;
  keep.reserve(st.tensors().size());
  for (const auto& t : st.tensors()) {
    keep.push_back(io::to_f32(t));
    if (t.name == "model.layers.0.mlp.down_proj.weight")
      for (float& x : keep.back()) x = x > 0 ? 3e38f : -3e38f;
    ts.push_back(io::f32_tensor(t.name, t.shape, keep.back()));
  }
  io::write_safetensors(model / "model.safetensors", std::move(ts), {{"format", "pt"}});
  const std::string d = fixture.string();
  const auto r = run("finetune --model " + model.string() + " --data " + d + "/data.jsonl --out " +
                     scratch("overflow_out").string() + " --steps 3 --batch-tokens 128 --max-len 64");
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK(r.out.find("step 1:") != std::string::npos);
  CHECK(r.out.find("the first non-finite tensor") != std::string::npos);
  CHECK(r.out.find("model.layers.0.") != std::string::npos);
}

TEST_CASE("finetune: --steps 1 trains; --epochs, --warmup-ratio, --min-lr-ratio; several --data files") {
  if (!have_tool()) return;
  const auto cfg = io::read_hf_config(fixture);
  auto out = scratch("one_step");
  auto r = run(base(out) + small + " --steps 1 --lr 1e-2");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  auto rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].lr == doctest::Approx(1e-3));  // the last step of the cosine: --min-lr-ratio 0.1 x lr, never 0
  const auto ad = io::read_peft_adapter(out, cfg);
  double moved = 0;
  for (float x : ad.at(0, io::lora_target::q_proj).b) moved += std::abs(x);
  CHECK(moved > 0);  // B left 0: the step trained
  // A decaying schedule ends at --min-lr-ratio * lr; warmup from the ratio.
  out = scratch("schedule");
  r = run(base(out) + small + " --steps 10 --lr 1e-2 --warmup-ratio 0.2 --min-lr-ratio 0.25 --schedule linear");
  REQUIRE(r.rc == 0);
  rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 10);
  CHECK(rows[0].lr == doctest::Approx(0.5e-2));  // warmup 2 steps: 1/2, 2/2
  CHECK(rows[1].lr == doctest::Approx(1e-2));
  CHECK(rows[9].lr == doctest::Approx(0.25e-2));
  // --epochs: the fixture's 5 lines make one 2-row batch each pass (89 tokens in 128 slots).
  out = scratch("epochs");
  r = run(base(out) + small + " --epochs 3");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 3);
  CHECK(rows.back().epoch == 3);
  CHECK(r.out.find("step 3/3") != std::string::npos);
  CHECK(r.out.find("epoch 3") != std::string::npos);
  // Two --data files: twice the examples of one per pass.
  out = scratch("two_files");
  const std::string d = fixture.string();
  r = run("finetune --model " + d + " --data " + d + "/data.jsonl " + d + "/data.jsonl --out " + out.string() + small +
          " --epochs 1");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("10 examples read") != std::string::npos);
}

TEST_CASE("finetune --config: YAML keys are the long flag names, flags win, OUT/config.yaml reads back") {
  if (!have_tool()) return;
  const auto dir = scratch("config");
  fs::create_directories(dir);
  const std::string d = fixture.string();
  {
    std::ofstream y(dir / "run.yaml");
    y << "model: " << d << "\ndata: [" << d << "/data.jsonl]\nout: " << (dir / "a").string()
      << "\nsteps: 4\nlr: 5e-3\nlora-r: 4\ntarget-modules: q_proj,v_proj\nmax-len: 64\nbatch-tokens: 128\n"
         "use-rslora: true\n";
  }
  auto r = run("finetune --config " + (dir / "run.yaml").string() + " --steps 3");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("step 3/3") != std::string::npos);  // the flag won over steps: 4
  const auto cfg = io::read_hf_config(fixture);
  CHECK(io::read_peft_adapter(dir / "a", cfg).config.use_rslora);
  const std::string resolved = [&] {
    std::ifstream f(dir / "a" / "config.yaml");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }();
  CHECK(resolved.find("steps: 3") != std::string::npos);
  CHECK(resolved.find("lr: 5e-3") != std::string::npos);
  // The resolved file runs the same training again.
  r = run("finetune --config " + (dir / "a" / "config.yaml").string() + " --out " + (dir / "b").string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  std::ifstream fa(dir / "a" / "adapter_model.safetensors", std::ios::binary), fb(dir / "b" / "adapter_model.safetensors", std::ios::binary);
  std::stringstream sa, sb;
  sa << fa.rdbuf(), sb << fb.rdbuf();
  CHECK(sa.str() == sb.str());
  // Errors name the file, the line and the key.
  { std::ofstream(dir / "bad.yaml") << "steps: 3\nlora_r: 4\n"; }
  r = run("finetune --config " + (dir / "bad.yaml").string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("bad.yaml:2") != std::string::npos);
  CHECK(r.out.find("lora_r") != std::string::npos);
  { std::ofstream(dir / "bad2.yaml") << "steps: [3\n"; }
  r = run("finetune --config " + (dir / "bad2.yaml").string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("bad2.yaml") != std::string::npos);
}

TEST_CASE("finetune on a terminal: one live progress line; --log-every N: plain lines every N steps") {
  if (!have_tool()) return;
  if (std::system("command -v script > /dev/null 2>&1") != 0) {
    MESSAGE("util-linux `script` (a pseudo-terminal) not installed: skipped");
    return;
  }
  auto out = scratch("tty");
  // `script` runs the tool on a pseudo-terminal: standard output is a tty.
  auto r = test::run_command("script -qec \"'" + tool + "' " + base(out) + small + " --steps 5\" /dev/null");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("\r\033[Kstep 5/5  epoch 5  loss ") != std::string::npos);  // rewritten in place
  CHECK(r.out.find("ETA ") != std::string::npos);
  CHECK(r.out.find("step 3/5  loss") == std::string::npos);  // no plain lines
  out = scratch("log_every");
  r = test::run_command("script -qec \"'" + tool + "' " + base(out) + small + " --steps 5 --log-every 2\" /dev/null");
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("step 2/5  loss") != std::string::npos);
  CHECK(r.out.find("step 3/5  loss") == std::string::npos);
  CHECK(r.out.find("step 4/5  loss") != std::string::npos);
  CHECK(r.out.find("step 5/5  loss") != std::string::npos);  // the last step always
}

// A run that evaluates on its own training data after every step.
static test::run_result run_early_stopping(const fs::path& out, const std::string& options) {
  return run(base(out) + small + " --eval-data " + fixture.string() + "/data.jsonl --eval-every 1" + options);
}

TEST_CASE("finetune --early-stopping-patience: stops after P evaluations without a new best") {
  if (!have_tool()) return;
  // lr 1e-30 moves B by ~1e-30: far below f32 resolution of the outputs, so the
  // eval loss stays exactly the first one (no new best): evals 2 and 3 fail to improve.
  const auto out = scratch("early");
  const auto r = run_early_stopping(out, " --steps 10 --lr 1e-30 --early-stopping-patience 2");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("early stopping: no new best eval loss in 2 evaluations") != std::string::npos);
  CHECK(r.out.find("after 3 steps (early stopping)") != std::string::npos);
  const auto rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 3);
  CHECK(rows[1].eval_loss == rows[0].eval_loss);
  CHECK(rows[2].eval_loss == rows[0].eval_loss);
  CHECK(fs::exists(out / "adapter_model.safetensors"));
}

TEST_CASE("finetune --early-stopping-patience: the adapter written is the best eval's, kept in OUT/best_adapter") {
  if (!have_tool()) return;
  // lr 0.3 overshoots on this fixture: the eval loss of step 2 is above step 1's,
  // so patience 1 stops after step 2 with step 1 the best. --save-every 1 keeps
  // both steps' adapters (checkpoint-1, checkpoint-2) to compare against.
  const auto out = scratch("early_best");
  const auto r = run_early_stopping(out, " --steps 12 --lr 0.3 --early-stopping-patience 1 --save-every 1");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[1].eval_loss > rows[0].eval_loss);
  CHECK(r.out.find("the adapter written is the best eval's: step 1") != std::string::npos);
  const auto best = nlohmann::json::parse(test::slurp(out / "best_adapter" / "best.json"));
  CHECK(best.at("step").get<int>() == 1);
  CHECK(best.at("eval_loss").get<double>() == doctest::Approx(rows[0].eval_loss).epsilon(1e-12));
  const auto final_bytes = test::slurp(out / "adapter_model.safetensors");
  CHECK(final_bytes == test::slurp(out / "best_adapter" / "adapter_model.safetensors"));
  CHECK(final_bytes == test::slurp(out / "checkpoint-1" / "adapter_model.safetensors"));
  CHECK(final_bytes != test::slurp(out / "checkpoint-2" / "adapter_model.safetensors"));
}

TEST_CASE("finetune --device cpu --memory-budget: the plan is printed and used; recompute changes no loss") {
  if (!have_tool()) return;
  // Two layers: with one, every plan holds one arena and recomputing saves nothing.
  const std::string d = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset").string();
  auto base = [&](const fs::path& out) {
    return "finetune --model " + d + " --data " + d + "/data.jsonl --out " + out.string();
  };
  const std::string args = small + " --steps 2 --device cpu";
  // No budget: the CPU keeps every saved value, and says so.
  const auto o0 = scratch("budget_none");
  auto r = run(base(o0) + args);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(test::memory_line(r.out).find("memory: keep every saved value (no --memory-budget") == 0);
  const auto ref = train::read_metrics(o0 / "metrics.jsonl", 1 << 30);
  REQUIRE(ref.size() == 2);
  // A large budget: keep everything, with the sizes of both ends printed.
  const auto o1 = scratch("budget_large");
  r = run(base(o1) + args + " --memory-budget 1000");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const std::string line = test::memory_line(r.out);
  CHECK(line.find("memory: budget 1000.0000 GiB (--memory-budget") == 0);
  CHECK(line.find("plan: keep every saved value;") != std::string::npos);
  const double keep = test::memory_line_bytes(r.out, "keeping everything "),
               smallest = test::memory_line_bytes(r.out, "smallest plan ");
  REQUIRE(smallest > 0);
  REQUIRE(smallest < keep);
  // Between the two: something is recomputed, within the budget, and the losses are the same bits.
  const auto o2 = scratch("budget_mid");
  const double mid = 0.5 * (keep + smallest);
  r = run(base(o2) + args + " --memory-budget " + test::budget_gib(mid));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const std::string mid_line = test::memory_line(r.out);
  CHECK((mid_line.find("plan: recompute") != std::string::npos || mid_line.find("re-run the whole block") != std::string::npos));
  CHECK(test::memory_line_bytes(r.out, "predicted peak ") <= mid);
  const auto rows = train::read_metrics(o2 / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 2);
  for (std::size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].loss == ref[i].loss);
  // Below the smallest plan: exit 1 naming the flag and the minimum.
  const auto o3 = scratch("budget_small");
  r = run(base(o3) + args + " --memory-budget " + test::budget_gib(0.5 * smallest));
  INFO(r.out);
  CHECK(r.rc == 1);
  CHECK(r.out.find("--memory-budget") != std::string::npos);
  CHECK(r.out.find("the smallest memory plan") != std::string::npos);
}
