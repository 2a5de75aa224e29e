// Checkpoints and resume, end to end through the built tool (CPU):
//  - a run killed (SIGKILL, through the STATICGRAD_CRASH_AT hook of
//    train/crash_hook.hpp) at every write point of a step and of a checkpoint
//    leaves only checkpoints that load, and `--resume OUT` then ends with the
//    adapter an uninterrupted run writes, bit for bit, and the same
//    metrics.jsonl (loss, lr, grad norm, tokens of every step);
//  - a kill at an arbitrary moment (a real kill -9 from outside) likewise;
//  - SIGTERM / SIGINT write a checkpoint and exit 143 / 130, and resume exactly;
//  - --save-total-limit keeps the newest checkpoints; a resume with a changed
//    option is refused naming the flag.
// The reference is the uninterrupted run of the same command. The options
// exercise everything a resume must restore: AdamW moments and step, the
// schedule (warmup + cosine), dropout masks (seeded by step), gradient
// accumulation and several epochs (the data position inside an epoch).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/train/metrics.hpp"
#include "staticgrad/train/training_checkpoint.hpp"
#include "support/run_tool.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::have_tool;
using staticgrad::test::slurp;

test::run_result run(const std::string& env, const std::string& args) {
  return test::run_command(env + " '" + tool + "' " + args + " 2>&1");
}

fs::path scratch(const std::string& name) {
  auto p = fs::path(STATICGRAD_BINARY_DIR) / "resume_out" / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

const fs::path fixture = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7");

std::string finetune_args(const fs::path& out, int steps = 9, const std::string& lr = "1e-2", int save_every = 2) {
  const std::string d = fixture.string();
  return "finetune --model " + d + " --data " + d + "/data.jsonl --out " + out.string() + " --steps " +
         std::to_string(steps) + " --lr " + lr + " --save-every " + std::to_string(save_every) +
         " --batch-tokens 64 --max-len 32 --grad-accum 2 --lora-r 4 --lora-alpha 8 --lora-dropout 0.1"
         " --target-modules q_proj,v_proj,down_proj --warmup-steps 2 --seed 5";
}

// Everything of metrics.jsonl that does not depend on timing.
std::string deterministic_metrics(const fs::path& out) {
  std::string s;
  for (const auto& r : train::read_metrics(out / "metrics.jsonl", 1 << 30))
    s += std::to_string(r.step) + " " + std::to_string(r.epoch) + " " + train::exact_number(r.loss) + " " +
         train::exact_number(r.lr) + " " + train::exact_number(r.grad_norm) + " " + std::to_string(r.tokens) + " " +
         std::to_string(r.tokens_total) + "\n";
  return s;
}

// Every complete checkpoint under out loads (adapter, optimizer, state) and names its own step.
void check_checkpoints_load(const fs::path& out) {
  const auto cfg = io::read_hf_config(fixture);
  for (const auto& [step, dir] : train::list_checkpoints(out)) {
    INFO(dir.string());
    train::loaded_checkpoint c;
    REQUIRE_NOTHROW(c = train::read_checkpoint(dir, cfg));
    CHECK(c.state.step == step);
    CHECK(c.optimizer.steps == step);  // one AdamW update per step
  }
}

struct reference {
  std::string adapter, metrics;
};

const reference& uninterrupted() {
  static const reference ref = [] {
    const auto out = scratch("reference");
    const auto r = run("", finetune_args(out));
    INFO(r.out);
    REQUIRE(r.rc == 0);
    return reference{slurp(out / "adapter_model.safetensors"), deterministic_metrics(out)};
  }();
  return ref;
}

void resume_and_compare(const fs::path& out) {
  check_checkpoints_load(out);
  const auto r = run("", finetune_args(out) + " --resume " + out.string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(slurp(out / "adapter_model.safetensors") == uninterrupted().adapter);  // bit for bit
  CHECK(deterministic_metrics(out) == uninterrupted().metrics);
  for (const auto& e : fs::directory_iterator(out)) CHECK(e.path().filename().string().rfind(".tmp", 0) != 0);
}

}  // namespace

TEST_CASE("resume: a run killed at every write point resumes to the uninterrupted adapter, bit for bit") {
  if (!have_tool()) return;
  REQUIRE(!uninterrupted().adapter.empty());
  for (const std::string point : {"step@3", "metrics@3", "step@4", "checkpoint-adapter@4", "checkpoint-optimizer@4",
                                  "checkpoint-state@4", "checkpoint-renamed@4", "checkpoint-adapter@2"}) {
    SUBCASE(point.c_str()) {
      const auto out = scratch("kill_" + point.substr(0, point.find('@')) + "_" + point.substr(point.find('@') + 1));
      const auto killed = run("STATICGRAD_CRASH_AT=" + point, finetune_args(out));
      INFO(killed.out);
      CHECK((killed.rc == -1 || killed.rc == 128 + 9));  // died by SIGKILL (the shell may report 137)
      const auto cks = train::list_checkpoints(out);
      if (point == "checkpoint-state@4" || point == "checkpoint-optimizer@4" || point == "checkpoint-adapter@4")
        CHECK((cks.empty() ? 0 : cks.back().first) == 2);  // the half-written checkpoint-4 is not there
      if (point == "checkpoint-renamed@4") CHECK(cks.back().first == 4);
      if (point == "checkpoint-adapter@2") {
        CHECK(cks.empty());  // nothing to resume from: --resume OUT fails, clearly
        const auto r = run("", finetune_args(out) + " --resume " + out.string());
        CHECK(r.rc == 1);
        CHECK(r.out.find("--resume") != std::string::npos);
        continue;
      }
      resume_and_compare(out);
    }
  }
}

TEST_CASE("resume: a kill -9 from outside at an arbitrary moment") {
  if (!have_tool()) return;
  REQUIRE(!uninterrupted().adapter.empty());
  const auto out = scratch("kill_outside");
  // The tool in the background, killed a few milliseconds after its first
  // checkpoint appears (wherever it then is: a step, a write, the end).
  const std::string first = (out / "checkpoint-2").string();
  const auto r = test::run_command("'" + tool + "' " + finetune_args(out) + " > /dev/null 2>&1 & pid=$!; for i in $(seq 2000); do [ -d '" + first +
                                   "' ] && break; sleep 0.005; done; sleep 0.0$(( $$ % 3 ))5; kill -9 $pid; wait $pid; echo $?");
  MESSAGE("exit status of the killed run: " << r.out);
  if (train::list_checkpoints(out).empty()) {
    MESSAGE("killed before the first checkpoint: nothing to resume from");
    return;
  }
  resume_and_compare(out);
}

TEST_CASE("SIGTERM and SIGINT write a checkpoint and exit 143 / 130; resume continues exactly") {
  if (!have_tool()) return;
  for (const auto& [sig, rc] : {std::pair{std::string("sigterm"), 143}, std::pair{std::string("sigint"), 130}}) {
    SUBCASE(sig.c_str()) {
      const auto out = scratch(sig);
      const auto r = run("STATICGRAD_CRASH_AT=" + sig + "@5", finetune_args(out));
      INFO(r.out);
      CHECK(r.rc == rc);
      CHECK(r.out.find("stopped by signal") != std::string::npos);
      const auto cks = train::list_checkpoints(out);
      REQUIRE(!cks.empty());
      CHECK(cks.back().first == 5);  // written on the signal, not at a --save-every multiple
      resume_and_compare(out);
    }
  }
}

TEST_CASE("--save-total-limit keeps the newest checkpoints; a resume with another option is refused") {
  if (!have_tool()) return;
  const auto out = scratch("limit");
  auto r = run("", finetune_args(out, 7, "1e-2", 1) + " --save-total-limit 2");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto cks = train::list_checkpoints(out);
  REQUIRE(cks.size() == 2);
  CHECK(cks[0].first == 5);
  CHECK(cks[1].first == 6);  // the last step writes the adapter to OUT, not a checkpoint
  r = run("", finetune_args(out, 7, "2e-2", 1) + " --resume " + out.string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("--lr") != std::string::npos);
  CHECK(r.out.find("trainer_state.json") != std::string::npos);
}
