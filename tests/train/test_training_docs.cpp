// docs/cli.md stays true: the finetune example between the
// `finetune-example` markers is run as written (from a scratch directory that
// sees the repository's tests/ folder) and its output must equal the
// documented lines, except the timing fields (tok/s, elapsed, mem), which
// are masked on both sides; the documented error lines are reproduced.
// The `demo --chat` session between the `demo-chat-example` markers is run
// the same way, command by command ("..." in the page stands for lines left
// out; the seconds of the run are masked too).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include "support/run_tool.hpp"

namespace fs = std::filesystem;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::slurp;

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

std::string mask_timing(std::string l) {
  l = std::regex_replace(l, std::regex("tok/s [0-9]+"), "tok/s N");
  l = std::regex_replace(l, std::regex("elapsed [0-9.]+s"), "elapsed Ts");
  l = std::regex_replace(l, std::regex("\\([0-9.]+ s\\)"), "(T s)");
  return std::regex_replace(l, std::regex("mem [0-9.]+ (MiB|GiB)"), "mem M");
}

// The lines of docs/cli.md between "<!-- NAME" and "<!-- end NAME -->".
std::vector<std::string> doc_block(const std::string& name) {
  const std::string doc = slurp(fs::path(STATICGRAD_SOURCE_DIR) / "docs" / "cli.md");
  const auto b = doc.find("<!-- " + name);
  const auto e = doc.find("<!-- end " + name + " -->");
  REQUIRE(b != std::string::npos);
  REQUIRE(e != std::string::npos);
  return lines(doc.substr(b, e - b));
}

// got must contain `expected` in order: each line equal (timing masked), "..." any lines in between.
void check_lines(const std::vector<std::string>& got, const std::vector<std::string>& expected) {
  std::size_t g = 0;
  bool skip = false;
  for (const auto& want : expected) {
    if (want == "...") {
      skip = true;
      continue;
    }
    while (skip && g < got.size() && mask_timing(got[g]) != mask_timing(want)) ++g;
    INFO("missing line: ", want);
    REQUIRE(g < got.size());
    CHECK(mask_timing(got[g]) == mask_timing(want));
    ++g, skip = false;
  }
  CHECK_MESSAGE((skip || g == got.size()), "extra lines after the documented ones");
}

}  // namespace

TEST_CASE("docs/cli.md: the finetune example prints what the page shows") {
  if (!fs::exists(tool)) {
    MESSAGE("staticgrad tool not built: skipped");
    return;
  }
  const std::string doc = slurp(fs::path(STATICGRAD_SOURCE_DIR) / "docs" / "cli.md");
  auto block = doc_block("finetune-example");
  // block: marker, ```sh, $ command, output..., ```
  REQUIRE(block.size() > 4);
  REQUIRE(block[2].rfind("$ staticgrad ", 0) == 0);
  const std::string args = block[2].substr(std::string("$ staticgrad ").size());
  std::vector<std::string> expected(block.begin() + 3, block.end() - 1);
  const fs::path work = fs::path(STATICGRAD_BINARY_DIR) / "docs_out";
  fs::remove_all(work);
  fs::create_directories(work);
  fs::create_directory_symlink(fs::path(STATICGRAD_SOURCE_DIR) / "tests", work / "tests");
  const auto r = staticgrad::test::run_command("cd '" + work.string() + "' && '" + tool + "' " + args);
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto got = lines(r.out);
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(mask_timing(got[i]) == mask_timing(expected[i]));
  CHECK(fs::exists(work / "ft" / "checkpoint-2" / "trainer_state.json"));
  CHECK(fs::exists(work / "ft" / "training.html"));
  // The documented errors, verbatim.
  for (const auto& [flag, line] : {std::pair{std::string("--max-grad-norm nan"), std::string("'--max-grad-norm': got nan")},
                                   std::pair{std::string("--max-len 1024"), std::string("'--max-len': got 1024")}}) {
    const auto pos = doc.find("staticgrad: error: " + line);
    REQUIRE(pos != std::string::npos);
    const std::string documented = doc.substr(pos, doc.find('\n', pos) - pos);
    const auto err = staticgrad::test::run_command("cd '" + work.string() + "' && '" + tool +
                                                   "' finetune --model tests/fixtures/hf/tied_v97_l1_r4_all7 --data "
                                                   "tests/fixtures/hf/tied_v97_l1_r4_all7/data.jsonl --out e " + flag + " 2>&1");
    CHECK(err.rc == 1);
    CHECK(err.out == documented + "\n");
  }
}

TEST_CASE("docs/cli.md: demo --chat teaches its answers and generate gives them back, as the page shows") {
  if (!fs::exists(tool)) {
    MESSAGE("staticgrad tool not built: skipped");
    return;
  }
  auto block = doc_block("demo-chat-example");
  // block: marker, ```sh, then "$ staticgrad ARGS" lines each followed by its output, then ```.
  REQUIRE(block.size() > 4);
  block.pop_back();
  const fs::path work = fs::path(STATICGRAD_BINARY_DIR) / "docs_demo_chat";
  fs::remove_all(work);
  fs::create_directories(work);
  int commands = 0;
  for (std::size_t i = 2; i < block.size();) {
    REQUIRE(block[i].rfind("$ staticgrad ", 0) == 0);
    const std::string args = block[i].substr(std::string("$ staticgrad ").size());
    std::size_t j = i + 1;
    while (j < block.size() && block[j].rfind("$ ", 0) != 0) ++j;
    const std::vector<std::string> expected(block.begin() + std::ptrdiff_t(i) + 1, block.begin() + std::ptrdiff_t(j));
    // Standard output only: generate's tokens/s line goes to standard error.
    const auto r = staticgrad::test::run_command("cd '" + work.string() + "' && '" + tool + "' " + args + " 2>/dev/null");
    INFO(args);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    check_lines(lines(r.out), expected);
    ++commands, i = j;
  }
  CHECK(commands == 2);
  CHECK(fs::exists(work / "dc" / "adapter" / "adapter_model.safetensors"));
}
