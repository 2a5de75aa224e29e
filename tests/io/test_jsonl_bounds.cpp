// Bounded inputs of the data path (JSONL reader and the loader's options):
// wrapping labels, NUL bytes, deep nesting, over-long lines and batch sizes
// that would overflow or not fit. Every case is a file made here; each must
// end in a staticgrad::error naming the file, the line and the field.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "io/io_test_util.hpp"
#include "staticgrad/io/dataset.hpp"

using namespace staticgrad;
using namespace staticgrad::io;

namespace {

const tokenizer& qwen() {
  static tokenizer t = tokenizer::from_file(std::string(STATICGRAD_SOURCE_DIR) + "/data/qwen2-tokenizer");
  return t;
}

// All examples of a file through the loader (file order, no shuffling).
data_stats load_all(const std::string& file, data_options o = {}) {
  o.shuffle_buffer = 0;
  o.max_len = 64;
  o.rows = 2;
  data_loader dl({file}, qwen(), o);
  batch b;
  while (dl.next(b)) {}
  return dl.stats();
}

}  // namespace

TEST_CASE("a label or id of 2^64 - 100 does not wrap to -100") {
  sg_test::scratch_dir dir;
  const auto f = (dir / "wrap.jsonl").string();
  // nlohmann holds 18446744073709551516 as unsigned; get<int64_t> is -100.
  sg_test::write_bytes(f, "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 18446744073709551516, 3]}\n");
  SG_CHECK_ERROR(load_all(f), "token id 18446744073709551516 outside the vocabulary", "wrap.jsonl", "labels[1]");
  sg_test::write_bytes(f, "{\"input_ids\": [1, 18446744073709551516]}\n");
  SG_CHECK_ERROR(load_all(f), "outside the vocabulary", "wrap.jsonl", "input_ids[1]");
  // Every value just past int64 and a few near 2^64 (mutation check).
  for (const char* v : {"9223372036854775808", "18446744073709551615", "18446744073709551517", "18446744073709551516"}) {
    INFO(v);
    sg_test::write_bytes(f, std::string("{\"input_ids\": [1, 2], \"labels\": [1, ") + v + "]}\n");
    SG_CHECK_ERROR(load_all(f), "outside the vocabulary", "wrap.jsonl", "labels[1]");
  }
  sg_test::write_bytes(f, "{\"input_ids\": [1, 2], \"labels\": [1, -100]}\n{\"input_ids\": [1, 2]}\n");
  CHECK(load_all(f).examples_read == 2);  // -100 itself still means "ignored"
}

TEST_CASE("a NUL byte does not silently end a line") {
  sg_test::scratch_dir dir;
  const auto f = (dir / "nul.jsonl").string();
  // After the NUL a second object: nlohmann alone would stop at the NUL and
  // accept {"text": "a"}.
  sg_test::write_bytes(f, "{\"text\": \"ok\"}\n" + std::string("{\"text\": \"a\"}\0{\"text\": \"b\"}", 27) + "\n");
  try {
    load_all(f);
    FAIL("accepted a line with a NUL byte");
  } catch (const staticgrad::error& e) {
    CHECK(std::string(e.what()).find("NUL byte at byte 14") != std::string::npos);
    CHECK(e.context().line == std::optional<std::size_t>(2));
    CHECK(e.context().tensor == "(json)");
  }
  // Skippable like any bad line.
  data_options o;
  o.skip_bad_lines = true;
  const auto st = load_all(f, o);
  CHECK(st.bad_lines_skipped == 1);
  CHECK(st.examples_read == 1);
  // An escaped NUL inside a string is JSON and stays part of the text.
  sg_test::write_bytes(f, "{\"text\": \"a\\u0000b\"}\n");
  CHECK(load_all(f).examples_read == 1);
}

TEST_CASE("nesting and line length are bounded while reading") {
  sg_test::scratch_dir dir;
  const auto f = (dir / "deep.jsonl").string();
  sg_test::write_bytes(f, "{\"text\": \"x\", \"meta\": " + std::string(200000, '[') + std::string(200000, ']') + "}\n");
  SG_CHECK_ERROR(load_all(f), "nested deeper than 128", "deep.jsonl", "(json)");
  // A line over the limit fails while it is read (no newline needed), with
  // the line number and the limit.
  const std::string line = "{\"text\": \"" + std::string(5000, 'a') + "\"}";
  sg_test::write_bytes(f, "{\"text\": \"short\"}\n" + line);
  {
    line_reader r(f, 4096);
    std::string s;
    CHECK(r.next(s));
    SG_CHECK_ERROR(r.next(s), "line longer than 4096 bytes", "deep.jsonl", "");
  }
  {
    line_reader r(f, line.size());  // exactly at the limit: accepted
    std::string s;
    CHECK(r.next(s));
    CHECK(r.next(s));
    CHECK(s == line);
    CHECK(!r.next(s));
  }
  CHECK(default_max_line_bytes == std::size_t(64) << 20);
}

TEST_CASE("loader sizes are checked before anything is allocated") {
  sg_test::scratch_dir dir;
  const auto f = (dir / "ok.jsonl").string();
  sg_test::write_bytes(f, "{\"text\": \"hello\"}\n");
  auto make = [&](data_options o) { return data_loader({f}, qwen(), o); };
  data_options o;
  o.max_len = std::size_t(1) << 40;  // --max-len 2^40 once tried a 4 TiB allocation
  SG_CHECK_ERROR(make(o), "max_len 1099511627776 outside [2, 1048576]", "", "max_len");
  o.max_len = data_loader::max_seq_len;
  CHECK_NOTHROW(make(o));
  o.rows = data_loader::max_batch_tokens / o.max_len + 1;  // rows * max_len past int32 (cu_seqlens)
  SG_CHECK_ERROR(make(o), "tokens per batch", "", "rows");
  o = {};
  o.max_len = 1;
  SG_CHECK_ERROR(make(o), "outside [2,", "", "max_len");
  o = {};
  o.shuffle_buffer = data_loader::max_buffered + 1;
  SG_CHECK_ERROR(make(o), "shuffle_buffer above the limit", "", "shuffle_buffer");
  // Text past the tokenizer's limit is refused before encoding.
  CHECK(tokenizer::max_text_bytes == std::size_t(1) << 30);
}
