// `staticgrad generate` end to end: the tool's greedy ids equal transformers'
// generate() (tests/fixtures/generate/cases.json) with the model directory's
// generation_config.json, with and without an adapter, and from a checkpoint
// `staticgrad merge` wrote; --device cuda without CUDA is refused clearly; bad prompts are
// named. Skipped (77) when the tool has not been built.
#include <doctest/doctest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/run_tool.hpp"

namespace fs = std::filesystem;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::have_tool;
const fs::path fixtures = fs::path(STATICGRAD_SOURCE_DIR) / "tests" / "fixtures";

using staticgrad::test::run_result;

// stdout
run_result run(const std::string& args) { return staticgrad::test::run_command(tool + " " + args + " 2>/dev/null"); }

std::string run_stderr(const std::string& args) {
  std::string out;
  FILE* p = ::popen((tool + " " + args + " 2>&1 >/dev/null").c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  ::pclose(p);
  return out;
}

std::string ids_arg(const nlohmann::json& a) {
  std::string s;
  for (const auto& x : a) s += (s.empty() ? "" : ",") + std::to_string(x.get<int>());
  return s;
}

nlohmann::json cases() {
  std::ifstream in(fixtures / "generate" / "cases.json");
  REQUIRE(in);
  return nlohmann::json::parse(in)["cases"];
}

}  // namespace

TEST_CASE("generate --prompt-ids equals transformers' greedy generate, stop ids from generation_config.json") {
  if (!have_tool()) return;
  int checked = 0;
  for (const auto& c : cases()) {
    const fs::path dir = fixtures / "hf" / c["model"].get<std::string>();
    std::ifstream gcf(dir / "generation_config.json");
    const auto gc = nlohmann::json::parse(gcf);
    if (nlohmann::json::array({gc["eos_token_id"]}) != c["eos_token_id"]) continue;  // needs a stop list
    const std::string name = c["name"];
    CAPTURE(name);
    std::string args = "generate --model " + dir.string() + " --prompt-ids " + ids_arg(c["prompt_ids"]) +
                       " --max-new-tokens " + std::to_string(c["max_new_tokens"].get<int>()) +
                       " --repetition-penalty " + std::to_string(c["repetition_penalty"].get<double>());
    if (c["adapter"].get<bool>()) args += " --adapter " + (dir / "adapter").string();
    const auto r = run(args);
    REQUIRE(r.rc == 0);
    const auto j = nlohmann::json::parse(r.out);
    CHECK(j["ids"] == c["expected_ids"]);
    CHECK(j["prompt_ids"] == c["prompt_ids"]);
    ++checked;
  }
  CHECK(checked >= 4);
}

TEST_CASE("generate from a merged checkpoint equals transformers with the unmerged adapter") {
  if (!have_tool()) return;
  for (const auto& c : cases()) {
    if (c["name"] != "v97_lora") continue;
    const fs::path dir = fixtures / "hf" / c["model"].get<std::string>();
    const fs::path merged = fs::path(STATICGRAD_BINARY_DIR) / "generate_cli_merged";
    fs::remove_all(merged);
    REQUIRE(run("merge --model " + dir.string() + " --adapter " + (dir / "adapter").string() + " --out " +
                merged.string())
                .rc == 0);
    const auto r = run("generate --model " + merged.string() + " --prompt-ids " + ids_arg(c["prompt_ids"]) +
                       " --max-new-tokens " + std::to_string(c["max_new_tokens"].get<int>()));
    REQUIRE(r.rc == 0);
    CHECK(nlohmann::json::parse(r.out)["ids"] == c["expected_ids"]);
    fs::remove_all(merged);
    return;
  }
  FAIL("case v97_lora missing from cases.json");
}

TEST_CASE("generate: clear refusals") {
  if (!have_tool()) return;
  const std::string model = (fixtures / "hf" / "tied_v97_l1_r4_all7").string();
  // --device cuda runs where there is a device (tests/gpu/test_cuda_decoder.cu
  // checks its output); otherwise it says why not.
  if (run("generate --model " + model + " --prompt-ids 1,2 --device cuda").rc != 0) {
    const auto why = run_stderr("generate --model " + model + " --prompt-ids 1,2 --device cuda");
    CHECK((why.find("built without CUDA") != std::string::npos ||
           why.find("no usable CUDA device") != std::string::npos));
  }
  CHECK(run_stderr("generate --model " + model + " --prompt-ids 1,x").find("'--prompt-ids'") != std::string::npos);
  CHECK(run_stderr("generate --model " + model + " --prompt-ids 1,500").find("outside the vocabulary") !=
        std::string::npos);
  CHECK(run_stderr("generate --model " + model + " --prompt-ids 1 --sample --temperature 0").find("temperature") !=
        std::string::npos);
  // The real tokenizer has 151,665 ids; this model 97.
  CHECK(run_stderr("generate --model " + model + " --prompt hi").find("the tokenizer has 151665 ids") !=
        std::string::npos);
}

TEST_CASE("generate --sample: a seed reproduces the sample") {
  if (!have_tool()) return;
  const std::string base = "generate --model " + (fixtures / "hf" / "tied_v1000_l3_r8_all7_theta1e4").string() +
                           " --prompt-ids 5,6,7 --max-new-tokens 12 --sample --temperature 1.5 --top-k 0 --seed ";
  const auto a = run(base + "3"), b = run(base + "3"), c = run(base + "4");
  REQUIRE(a.rc == 0);
  CHECK(nlohmann::json::parse(a.out)["ids"] == nlohmann::json::parse(b.out)["ids"]);
  CHECK(nlohmann::json::parse(a.out)["ids"] != nlohmann::json::parse(c.out)["ids"]);
}
