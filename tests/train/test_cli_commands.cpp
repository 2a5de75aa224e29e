// The built `staticgrad` tool end to end: loss (+ --grads-out) and logits
// against the transformers + PEFT fixtures, finetune -> an adapter PEFT's
// reader accepts that lowers the loss, merge, demo, and clear errors.
// Skipped (77) when the tool has not been built.
#include "support/compare.hpp"
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "fixtures/hf/hf_fixture.hpp"
#include "support/run_tool.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;

namespace {

using sgtest::rel_err;

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::have_tool;

using staticgrad::test::run_result;

// stdout and stderr
run_result run(const std::string& args) { return staticgrad::test::run_command(tool + " " + args + " 2>&1"); }

nlohmann::json last_json_line(const std::string& s) {
  auto e = s.find_last_not_of('\n');
  auto b = s.rfind('\n', e);
  return nlohmann::json::parse(s.substr(b == std::string::npos ? 0 : b + 1, e + 1 - (b == std::string::npos ? 0 : b + 1)));
}

fs::path scratch(const std::string& name) {
  auto p = fs::path(STATICGRAD_BINARY_DIR) / "cli_out" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

}  // namespace

TEST_CASE("staticgrad loss --grads-out and logits reproduce transformers + PEFT") {
  if (!have_tool()) return;
  for (const auto& name : sg_fixtures::hf_fixture_cases()) {
    SUBCASE(name.c_str()) {
      auto fx = sg_fixtures::load_hf_fixture(name);
      const auto out = scratch("loss_" + name);
      const auto d = fx.dir.string();
      auto r = run("loss --model " + d + " --data " + d + "/data.jsonl --adapter " + d + "/adapter --grads-out " +
                   (out / "grads.safetensors").string());
      INFO(r.out);
      REQUIRE(r.rc == 0);
      const auto j = last_json_line(r.out);
      CHECK(j["tokens"].get<std::int64_t>() == fx.tokens);
      CHECK(std::abs(j["loss"].get<double>() - fx.loss) / fx.loss < 1e-4);
      io::safetensors_file g(out / "grads.safetensors");
      CHECK(g.tensors().size() == 2 * fx.adapter.config.target_modules.size() * std::size_t(fx.config.num_hidden_layers));
      for (const auto& tv : g.tensors()) {
        INFO(tv.name);
        CHECK(tv.dtype == io::st_dtype::f32);
        CHECK(rel_err(io::to_f32(tv), io::to_f32(fx.expected.at(tv.name))) < 1e-3);
      }
      r = run("logits --model " + d + " --data " + d + "/data.jsonl --adapter " + d + "/adapter --out " +
              (out / "logits.safetensors").string());
      REQUIRE(r.rc == 0);
      io::safetensors_file lg(out / "logits.safetensors");
      for (std::size_t i = 0; i < fx.data.size(); ++i)
        CHECK(rel_err(io::to_f32(lg.at("logits." + std::to_string(i))), fx.logits(i)) < 1e-4);
    }
  }
}

TEST_CASE("staticgrad finetune lowers the loss and writes a PEFT adapter; merge writes a checkpoint") {
  if (!have_tool()) return;
  const auto d = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7").string();
  const auto out = scratch("finetune");
  auto r = run("finetune --model " + d + " --data " + d + "/data.jsonl --out " + (out / "adapter").string() +
               " --steps 6 --lr 1e-2 --batch-tokens 128 --max-len 64 --lora-r 4 --lora-alpha 8"
               " --target-modules q_proj,v_proj,gate_proj --warmup-steps 1 --seed 5 --save-every 3");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  CHECK(std::regex_search(r.out, std::regex("step 6/6  loss [0-9.]+  tokens [0-9]+  lr [0-9.e+-]+")));
  const auto cfg = io::read_hf_config(fs::path(d));
  const auto ad = io::read_peft_adapter(out / "adapter", cfg);
  CHECK(io::read_peft_adapter(out / "adapter" / "checkpoint-3", cfg).config.r == 4);  // --save-every
  CHECK(ad.config.r == 4);
  CHECK(ad.config.target_modules.size() == 3);
  const auto base = run("loss --model " + d + " --data " + d + "/data.jsonl");
  const auto tuned = run("loss --model " + d + " --data " + d + "/data.jsonl --adapter " + (out / "adapter").string());
  REQUIRE(base.rc == 0);
  REQUIRE(tuned.rc == 0);
  CHECK(last_json_line(tuned.out)["loss"].get<double>() < last_json_line(base.out)["loss"].get<double>());
  r = run("merge --model " + d + " --adapter " + (out / "adapter").string() + " --out " + (out / "merged").string());
  REQUIRE(r.rc == 0);
  CHECK(last_json_line(r.out)["merged"].get<int>() == 3);
  CHECK(fs::exists(out / "merged" / "model.safetensors"));
  CHECK(fs::exists(out / "merged" / "config.json"));
}

TEST_CASE("staticgrad demo: the loss falls below half its start") {
  if (!have_tool()) return;
  const auto out = scratch("demo");
  const auto r = run("demo --out " + out.string());
  INFO(r.out);
  REQUIRE(r.rc == 0);
  std::smatch m;
  REQUIRE(std::regex_search(r.out, m, std::regex("first loss ([0-9.]+), last loss ([0-9.]+)")));
  const double first = std::stod(m[1].str()), last = std::stod(m[2].str());
  CHECK(first > 4.0);  // ~ln(256) = 5.5 for the random model
  CHECK(last < first / 2);
  CHECK(fs::exists(out / "adapter" / "adapter_model.safetensors"));
}

TEST_CASE("staticgrad model commands: clear errors") {
  if (!have_tool()) return;
  const auto d = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7").string();
  const auto u = sg_fixtures::hf_fixture_dir("untied_v256_l2_r8_rslora_subset").string();
  const auto out = scratch("errors");
  auto r = run("loss --model " + d + " --data " + d + "/data.jsonl --grads-out " + (out / "g.safetensors").string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("--grads-out needs --adapter") != std::string::npos);
  // Token ids beyond the model's vocabulary (97): named with file and line.
  const auto big = out / "big.jsonl";
  { std::ofstream(big) << "{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [1, 200, 3]}\n"; }
  r = run("loss --model " + d + " --data " + big.string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("big.jsonl:2") != std::string::npos);
  CHECK(r.out.find("vocab_size 97") != std::string::npos);
  // A malformed data line stops finetune with file, line and field; with
  // --skip-bad-lines it is skipped and counted.
  const auto bad = out / "bad.jsonl";
  {
    std::ifstream good(d + "/data.jsonl");
    std::ofstream o(bad);
    std::string line;
    std::getline(good, line);
    o << line << "\n{\"input_ids\": \"oops\"}\n" << line << "\n";
  }
  r = run("finetune --model " + d + " --data " + bad.string() + " --out " + (out / "b").string() + " --steps 1");
  CHECK(r.rc == 1);
  CHECK(r.out.find("bad.jsonl:2") != std::string::npos);
  CHECK(r.out.find("input_ids") != std::string::npos);
  r = run("finetune --model " + d + " --data " + bad.string() + " --out " + (out / "b").string() +
          " --steps 1 --skip-bad-lines");
  CHECK(r.rc == 0);
  CHECK(r.out.find("1 bad lines skipped") != std::string::npos);
  r = run("finetune --model " + d + " --data " + d + "/data.jsonl --out " + (out / "a").string() +
          " --target-modules q_proj,lm_head");
  CHECK(r.rc == 1);
  CHECK(r.out.find("lm_head") != std::string::npos);
  // An adapter made for another model: the adapter file and tensor named.
  r = run("merge --model " + d + " --adapter " + u + "/adapter --out " + (out / "m").string());
  CHECK(r.rc == 1);
  CHECK(r.out.find("adapter") != std::string::npos);
  r = run("loss --model " + out.string() + " --data " + d + "/data.jsonl");
  CHECK(r.rc == 1);
  CHECK(r.out.find("config.json") != std::string::npos);
}
