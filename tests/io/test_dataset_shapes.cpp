// The shapes users bring (io/dataset_shapes.hpp): ShareGPT and
// prompt/completion lines against ids and labels from Hugging Face
// `tokenizers` (tests/fixtures/tokenizer/dataset_cases.jsonl, written by
// scripts/make_dataset_fixture.py; test_dataset.cpp checks every line of it,
// this file that the new shapes are in it), their errors, long text split
// into windows that train every token once, truncation instead, and the count
// of examples whose every trained token truncation removed.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "staticgrad/io/dataset.hpp"

using namespace staticgrad::io;

namespace {

const std::string root = STATICGRAD_SOURCE_DIR;

const tokenizer& qwen() {
  static tokenizer t = tokenizer::from_file(root + "/data/qwen2-tokenizer");
  return t;
}

std::string write_temp(const std::string& name, const std::string& content) {
  auto dir = std::filesystem::path(STATICGRAD_BINARY_DIR) / "test_dataset_shapes_tmp";
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

example parse(const std::string& line) { return parse_example(nlohmann::json::parse(line), qwen(), {}, "f.jsonl", 3); }

staticgrad::error_context error_of(const std::string& line) {
  try {
    parse(line);
  } catch (const staticgrad::error& e) {
    return e.context();
  }
  return {};
}

// Every batch of a loader over `file` (file order, one example per row).
std::vector<batch> all_batches(const std::string& file, data_options o) {
  o.shuffle_buffer = 0;
  o.layout = row_layout::pad;
  data_loader dl({file}, qwen(), o);
  std::vector<batch> v;
  batch b;
  while (dl.next(b)) v.push_back(b);
  return v;
}

}  // namespace

TEST_CASE("ShareGPT and prompt/completion lines match the Hugging Face reference") {
  std::ifstream f(root + "/tests/fixtures/tokenizer/dataset_cases.jsonl");
  REQUIRE(f);
  std::string line;
  std::set<std::string> seen;
  while (std::getline(f, line)) {
    const auto c = nlohmann::json::parse(line);
    const auto& l = c["line"];
    std::string shape = l.contains("conversations") ? "sharegpt"
                        : l.contains("prompt")      ? (l["prompt"].is_string() ? "prompt/completion" : "conversational")
                                                    : "";
    if (shape.empty()) continue;
    INFO("case " << l.dump());
    const auto ex = parse_example(l, qwen(), {}, "fixture", 1);
    CHECK(ex.input_ids == c["input_ids"].get<std::vector<std::int32_t>>());
    CHECK(ex.labels == c["labels"].get<std::vector<std::int32_t>>());
    seen.insert(shape);
  }
  CHECK(seen == std::set<std::string>{"sharegpt", "prompt/completion", "conversational"});
}

TEST_CASE("a ShareGPT line is the messages line with the same turns") {
  const auto a = parse(R"({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]})");
  const auto b = parse(R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})");
  CHECK(a.input_ids == b.input_ids);
  CHECK(a.labels == b.labels);
}

TEST_CASE("errors of the new shapes name the field") {
  CHECK(error_of(R"({"conversations": []})").tensor == "conversations");
  CHECK(error_of(R"({"conversations": [{"from": "alien", "value": "x"}]})").tensor == "conversations[0].from");
  CHECK(error_of(R"({"conversations": [{"from": "human", "value": 3}]})").tensor == "conversations[0].value");
  CHECK(error_of(R"({"conversations": [{"from": "human", "value": "x"}]})").tensor == "conversations");  // no gpt turn
  CHECK(error_of(R"({"prompt": "x"})").tensor == "completion");
  CHECK(error_of(R"({"prompt": "x", "completion": 5})").tensor == "completion");
  CHECK(error_of(R"({"prompt": "x", "completion": ""})").tensor == "completion");
  CHECK(error_of(R"({"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "user", "content": "y"}]})")
            .tensor == "completion");
  const auto e = error_of(R"({"conversations": [{"from": "alien", "value": "x"}]})");
  CHECK(e.file == "f.jsonl");
  CHECK(e.line == 3u);
}

TEST_CASE("long text documents are split into max-len windows that train every token once") {
  std::string text;
  for (int i = 0; i < 120; ++i) text += "word" + std::to_string(i) + " ";
  const auto whole = parse(nlohmann::json{{"text", text}}.dump());
  const std::size_t n = whole.input_ids.size();
  REQUIRE(n > 100);
  const auto file = write_temp("long.jsonl", nlohmann::json{{"text", text}}.dump() + "\n{\"text\": \"short\"}\n");
  data_options o;
  o.max_len = 32;
  o.rows = 1;
  const auto batches = all_batches(file, o);
  data_options count = o;
  count.shuffle_buffer = 0;
  count.layout = row_layout::pad;
  data_loader dl({file}, qwen(), count);
  batch b;
  while (dl.next(b)) {}
  CHECK(dl.stats().split_documents == 1);
  CHECK(dl.stats().truncated == 0);
  const std::size_t windows = dl.stats().windows;
  CHECK(windows == (n - 1 + 30) / 31);  // stride max_len - 1
  REQUIRE(batches.size() == windows + 1);
  // Re-assemble: window k starts at k * 31; its tokens equal the document's,
  // and the trained positions cover tokens 1..n-1 exactly once.
  std::vector<int> trained(n, 0);
  for (std::size_t k = 0; k < windows; ++k) {
    const auto& w = batches[k];
    const std::size_t start = k * 31;
    for (std::size_t t = 0; t < 32 && start + t < n; ++t) {
      CHECK(w.input_ids[t] == whole.input_ids[start + t]);
      if (w.labels[t] != ignore_index) ++trained[start + t];
    }
  }
  CHECK(trained[0] == 0);
  for (std::size_t i = 1; i < n; ++i) CHECK(trained[i] == 1);

  o.split_long_text = false;  // --truncate-text
  data_options t = o;
  t.shuffle_buffer = 0;
  data_loader dt({file}, qwen(), t);
  while (dt.next(b)) {}
  CHECK(dt.stats().split_documents == 0);
  CHECK(dt.stats().truncated == 1);
  CHECK(dt.stats().examples_used == 2);
}

TEST_CASE("a chat whose trained tokens all fall beyond max-len is counted as truncated away") {
  std::string user(400, 'a');
  const auto file = write_temp(
      "cut.jsonl",
      nlohmann::json{{"messages", {{{"role", "user"}, {"content", user}}, {{"role", "assistant"}, {"content", "ok"}}}}}
              .dump() +
          "\n" + R"({"messages": [{"role": "system", "content": ""}, {"role": "assistant", "content": ""}]})" + "\n" +
          R"({"text": "fine"})" + "\n");
  data_options o;
  o.max_len = 64;
  o.shuffle_buffer = 0;
  data_loader dl({file}, qwen(), o);
  batch b;
  while (dl.next(b)) {}
  CHECK(dl.stats().truncated == 1);
  CHECK(dl.stats().dropped_no_targets == 1);
  CHECK(dl.stats().truncated_no_targets == 1);
  CHECK(dl.stats().examples_used == 2);
}

TEST_CASE("windows(): bounds") {
  using shapes::windows;
  CHECK(windows(5, 8) == std::vector<std::pair<std::size_t, std::size_t>>{{0, 5}});
  CHECK(windows(8, 8) == std::vector<std::pair<std::size_t, std::size_t>>{{0, 8}});
  CHECK(windows(9, 8) == std::vector<std::pair<std::size_t, std::size_t>>{{0, 8}, {7, 9}});
  CHECK(windows(15, 8) == std::vector<std::pair<std::size_t, std::size_t>>{{0, 8}, {7, 15}});
  CHECK(windows(16, 8) == std::vector<std::pair<std::size_t, std::size_t>>{{0, 8}, {7, 15}, {14, 16}});
}
