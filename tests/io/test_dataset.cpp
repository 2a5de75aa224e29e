// The data pipeline: each shape against ids and labels computed with Hugging
// Face `tokenizers` (tests/fixtures/tokenizer/dataset_cases.jsonl, written by
// scripts/make_dataset_fixture.py), each error, packing boundaries, padding,
// truncation, shuffling and streaming over several files.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
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
  auto dir = std::filesystem::path(STATICGRAD_BINARY_DIR) / "test_dataset_tmp";
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

// The error a single line gets, or "" when it parses.
staticgrad::error_context error_of(const std::string& line, data_options o = {}) {
  auto f = write_temp("one.jsonl", "\n" + line + "\n");  // the bad line is line 2
  o.shuffle_buffer = 0;
  data_loader dl({f}, qwen(), o);
  batch b;
  try {
    while (dl.next(b)) {}
  } catch (const staticgrad::error& e) {
    return e.context();
  }
  return {};
}

std::vector<example> all_examples_in_order(const std::string& file) {
  std::vector<example> v;
  line_reader r(file);
  std::string line;
  while (r.next(line)) {
    if (is_blank(line)) continue;
    v.push_back(parse_example(nlohmann::json::parse(line), qwen(), {}, file, r.line_no()));
  }
  return v;
}

}  // namespace

TEST_CASE("each shape gives the ids and labels of the Hugging Face reference") {
  std::ifstream f(root + "/tests/fixtures/tokenizer/dataset_cases.jsonl");
  std::string line;
  std::set<std::string> shapes;
  int n = 0;
  while (std::getline(f, line)) {
    auto c = nlohmann::json::parse(line);
    INFO("case " << c["line"].dump());
    auto ex = parse_example(c["line"], qwen(), {}, "fixture", 1);
    CHECK(ex.input_ids == c["input_ids"].get<std::vector<std::int32_t>>());
    CHECK(ex.labels == c["labels"].get<std::vector<std::int32_t>>());
    for (const char* k : {"text", "messages", "instruction"})
      if (c["line"].contains(k)) shapes.insert(k);
    ++n;
  }
  CHECK(n >= 10);
  CHECK(shapes == std::set<std::string>{"text", "messages", "instruction"});
}

TEST_CASE("chat: a given system message replaces the default one; labels cover only assistant turns") {
  const auto& t = qwen();
  auto with_default = parse_example(nlohmann::json::parse(R"({"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]})"),
                                    t, {}, "f", 1);
  CHECK(t.decode(with_default.input_ids) ==
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n");
  auto with_system = parse_example(nlohmann::json::parse(R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]})"),
                                   t, {}, "f", 1);
  CHECK(t.decode(with_system.input_ids) ==
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n");
  std::vector<std::int32_t> trained;
  for (std::size_t i = 0; i < with_system.labels.size(); ++i)
    if (with_system.labels[i] != ignore_index) trained.push_back(with_system.labels[i]);
  CHECK(t.decode(trained) == "a<|im_end|>");
  // The "\n" after the assistant's <|im_end|> is not trained on.
  CHECK(with_system.labels.back() == ignore_index);
}

TEST_CASE("pre-tokenized: labels optional, first label always ignored") {
  const auto& t = qwen();
  auto a = parse_example(nlohmann::json::parse(R"({"input_ids":[1,2,3]})"), t, {}, "f", 1);
  CHECK(a.input_ids == std::vector<std::int32_t>{1, 2, 3});
  CHECK(a.labels == std::vector<std::int32_t>{-100, 2, 3});
  auto b = parse_example(nlohmann::json::parse(R"({"input_ids":[1,2,3],"labels":[1,-100,3]})"), t, {}, "f", 1);
  CHECK(b.labels == std::vector<std::int32_t>{-100, -100, 3});
}

TEST_CASE("bad lines: each error names file, line and field") {
  struct bad {
    const char* line;
    const char* field;
  };
  for (auto [line, field] : std::vector<bad>{
           {R"({"text": "unterminated)", "(json)"},
           {R"(["a", "list"])", "(json)"},
           {R"({"query": "unknown shape"})", "(record)"},
           {R"({"prompt": "no completion"})", "completion"},
           {R"({"text": 42})", "text"},
           {R"({"messages": "hi"})", "messages"},
           {R"({"messages": []})", "messages"},
           {R"({"messages": [42]})", "messages[0]"},
           {R"({"messages": [{"content": "x"}]})", "messages[0].role"},
           {R"({"messages": [{"role": "user", "content": null}]})", "messages[0].content"},
           {R"({"messages": [{"role": "user", "content": "only a user"}]})", "messages"},
           {R"({"instruction": "x"})", "output"},
           {R"({"output": "x"})", "instruction"},
           {R"({"instruction": "x", "input": 3, "output": "y"})", "input"},
           {R"({"input_ids": "1 2 3"})", "input_ids"},
           {R"({"input_ids": []})", "input_ids"},
           {R"({"input_ids": [1, 2.5]})", "input_ids[1]"},
           {R"({"input_ids": [1, 999999999]})", "input_ids[1]"},
           {R"({"input_ids": [1, -100]})", "input_ids[1]"},
           {R"({"input_ids": [1, 2], "labels": [1]})", "labels"},
           {R"({"input_ids": [1, 2], "labels": [1, -5]})", "labels[1]"},
       }) {
    INFO("line " << line);
    auto ctx = error_of(line);
    CHECK(ctx.file.find("one.jsonl") != std::string::npos);
    CHECK(ctx.line == std::optional<std::size_t>(2));
    CHECK(ctx.tensor == field);
  }
  // Invalid UTF-8 inside a JSON string is a JSON error too.
  CHECK(error_of("{\"text\": \"a\xff\"}").tensor == "(json)");
  CHECK(error_of(R"({"text": "fine"})").file.empty());
}

TEST_CASE("--skip-bad-lines skips and counts") {
  auto f = write_temp("mixed.jsonl", R"({"text": "one"})" "\n" R"({"text": 1})" "\n" "not json\n\n" R"({"text": "two"})" "\n");
  data_options o;
  o.skip_bad_lines = true;
  o.max_len = 16;
  data_loader dl({f}, qwen(), o);
  batch b;
  std::size_t examples = 0;
  while (dl.next(b)) examples += b.examples;
  CHECK(examples == 2);
  CHECK(dl.stats().bad_lines_skipped == 2);
  CHECK(dl.stats().examples_read == 2);
  CHECK(dl.stats().lines == 5);
  o.skip_bad_lines = false;
  data_loader strict({f}, qwen(), o);
  CHECK_THROWS_AS(strict.next(b), staticgrad::error);
}

TEST_CASE("packing: rows are full-length, examples never cross rows, boundaries reset positions and labels") {
  std::string data;
  for (int i = 0; i < 40; ++i) data += R"({"input_ids": [)" + std::to_string(100 + i) + std::string(",5,6,7,8,9,10", 0, 2 * (i % 6) + 2) + "]}\n";
  auto f = write_temp("pack.jsonl", data);
  auto expected = all_examples_in_order(f);
  data_options o;
  o.max_len = 8;
  o.rows = 3;
  o.seed = 7;
  data_loader dl({f}, qwen(), o);
  batch b;
  std::multiset<std::vector<std::int32_t>> seen;
  std::size_t trained = 0, tokens = 0;
  while (dl.next(b)) {
    REQUIRE(b.seq_len == 8);
    REQUIRE(b.input_ids.size() == b.rows * 8);
    REQUIRE(b.labels.size() == b.rows * 8);
    REQUIRE(b.positions.size() == b.rows * 8);
    REQUIRE(b.cu_seqlens.front() == 0);
    REQUIRE(b.cu_seqlens.back() == std::int32_t(b.rows * 8));
    for (std::size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s) {
      std::int32_t from = b.cu_seqlens[s], to = b.cu_seqlens[s + 1];
      REQUIRE(from < to);
      CHECK(from / 8 == (to - 1) / 8);  // a segment stays inside its row
      CHECK(b.labels[std::size_t(from)] == ignore_index);  // first token of a segment is never a target
      for (std::int32_t t = from; t < to; ++t) CHECK(b.positions[std::size_t(t)] == t - from);
      std::vector<std::int32_t> seg(b.input_ids.begin() + from, b.input_ids.begin() + to);
      if (seg[0] < 1000) {  // an example (ids 100..139 first; padding runs are <|endoftext|>)
        seen.insert(seg);
        tokens += seg.size();
        for (std::int32_t t = from + 1; t < to; ++t) CHECK(b.labels[std::size_t(t)] == b.input_ids[std::size_t(t)]);
        trained += std::size_t(to - from - 1);
      } else {
        for (std::int32_t t = from; t < to; ++t) {
          CHECK(b.input_ids[std::size_t(t)] == 151643);
          CHECK(b.labels[std::size_t(t)] == ignore_index);
        }
      }
    }
  }
  std::multiset<std::vector<std::int32_t>> want;
  for (auto& e : expected) want.insert(e.input_ids);
  CHECK(seen == want);
  CHECK(dl.stats().tokens == tokens);
  CHECK(dl.stats().trained_tokens == trained);
  CHECK(dl.stats().examples_used == expected.size());
  // First-fit packing wastes little: fewer rows than examples.
  CHECK(dl.stats().rows < expected.size());
}

TEST_CASE("padding mode: one example per row, pads ignored") {
  auto f = write_temp("pad.jsonl", R"({"text": "hello world"})" "\n" R"({"text": "a much longer text that goes on"})" "\n");
  data_options o;
  o.layout = row_layout::pad;
  o.max_len = 12;
  o.rows = 4;
  o.shuffle_buffer = 0;
  data_loader dl({f}, qwen(), o);
  batch b;
  REQUIRE(dl.next(b));
  CHECK(b.rows == 2);  // the last batch may be short
  CHECK(b.examples == 2);
  auto ex = all_examples_in_order(f);
  for (std::size_t r = 0; r < 2; ++r) {
    std::size_t n = ex[r].input_ids.size();
    for (std::size_t t = 0; t < 12; ++t) {
      if (t < n) {
        CHECK(b.input_ids[r * 12 + t] == ex[r].input_ids[t]);
        CHECK(b.labels[r * 12 + t] == ex[r].labels[t]);
      } else {
        CHECK(b.input_ids[r * 12 + t] == 151643);
        CHECK(b.labels[r * 12 + t] == ignore_index);
      }
    }
  }
  CHECK_FALSE(dl.next(b));
  o.drop_last = true;
  data_loader dl2({f}, qwen(), o);
  CHECK_FALSE(dl2.next(b));
}

TEST_CASE("too long: truncated or dropped, and counted") {
  auto f = write_temp("long.jsonl", R"({"input_ids": [1,2,3,4,5,6,7,8,9,10]})" "\n" R"({"input_ids": [1,2,3]})" "\n" R"({"input_ids": [1,2,3,4,5,6], "labels": [-100,-100,-100,-100,-100,6]})" "\n");
  data_options o;
  o.max_len = 4;
  o.shuffle_buffer = 0;
  o.rows = 10;
  {
    data_loader dl({f}, qwen(), o);
    batch b;
    REQUIRE(dl.next(b));
    CHECK(dl.stats().truncated == 2);
    CHECK(dl.stats().dropped_no_targets == 1);  // the third lost its only target to truncation
    CHECK(dl.stats().examples_used == 2);
    CHECK(std::vector<std::int32_t>(b.input_ids.begin(), b.input_ids.begin() + 4) == std::vector<std::int32_t>{1, 2, 3, 4});
  }
  o.overflow = overflow_policy::drop;
  {
    data_loader dl({f}, qwen(), o);
    batch b;
    REQUIRE(dl.next(b));
    CHECK(dl.stats().dropped_too_long == 2);
    CHECK(dl.stats().examples_used == 1);
    CHECK(b.examples == 1);
  }
}

TEST_CASE("shuffle: deterministic by seed, a permutation, streams several files") {
  std::string a, c;
  for (int i = 0; i < 50; ++i) a += R"({"input_ids": [)" + std::to_string(1000 + i) + ",1]}\n";
  for (int i = 0; i < 30; ++i) c += R"({"input_ids": [)" + std::to_string(2000 + i) + ",1]}\n";
  auto fa = write_temp("a.jsonl", a), fc = write_temp("c.jsonl", c);
  auto order = [&](std::uint64_t seed, std::size_t buffer) {
    data_options o;
    o.seed = seed;
    o.shuffle_buffer = buffer;
    o.layout = row_layout::pad;
    o.max_len = 2;
    o.rows = 7;
    data_loader dl({fa, fc}, qwen(), o);
    batch b;
    std::vector<std::int32_t> firsts;
    while (dl.next(b))
      for (std::size_t r = 0; r < b.rows; ++r) firsts.push_back(b.input_ids[r * 2]);
    return firsts;
  };
  auto s1 = order(1, 16), s1b = order(1, 16), s2 = order(2, 16), none = order(1, 0);
  CHECK(s1 == s1b);
  CHECK(s1 != s2);
  CHECK(s1.size() == 80);
  std::vector<std::int32_t> sorted = s1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == none);  // file order without shuffling, and the shuffle is a permutation
  CHECK(none.front() == 1000);
  CHECK(none.back() == 2029);
}

TEST_CASE("errors in a second file name that file and its own line numbers") {
  auto good = write_temp("good.jsonl", R"({"text": "x"})" "\n");
  auto bad = write_temp("bad.jsonl", R"({"text": "y"})" "\n" R"({"text": "z"})" "\n" R"({"txt": "oops"})" "\n");
  data_options o;
  o.shuffle_buffer = 0;
  data_loader dl({good, bad}, qwen(), o);
  batch b;
  try {
    while (dl.next(b)) {}
    FAIL("expected an error");
  } catch (const staticgrad::error& e) {
    CHECK(e.context().file == bad);
    CHECK(e.context().line == std::optional<std::size_t>(3));
    CHECK(std::string(e.what()).find("bad.jsonl:3") != std::string::npos);
  }
  CHECK_THROWS_AS(data_loader({write_temp("x", "")}, qwen(), data_options{.max_len = 1}), staticgrad::error);
  CHECK_THROWS_AS(([&] { data_loader d({"/no/such.jsonl"}, qwen(), {}); batch bb; d.next(bb); })(), staticgrad::error);
}
