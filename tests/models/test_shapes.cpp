// Config dispatch: every Qwen2.5 size (numbers from the published config.json
// files, restated in docs/models.md) reaches its compile-time block shape; anything
// else gets an error listing the shapes and how to add one.
#include <doctest/doctest.h>

#include <string>

#include "staticgrad/models/qwen2.hpp"

using namespace staticgrad;

namespace {
io::hf_config cfg(int hidden, int inter, int heads, int kv) {
  io::hf_config c;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv;
  c.head_dim = hidden / heads;
  return c;
}
std::string which(const io::hf_config& c) {
  return models::dispatch_shape(c, "config.json", []<class S>() { return std::string(models::shape_name<S>::value); });
}
}  // namespace

TEST_CASE("each Qwen2.5 size dispatches to its block shape") {
  CHECK(which(cfg(896, 4864, 14, 2)) == "0.5b");
  CHECK(which(cfg(1536, 8960, 12, 2)) == "1.5b");
  CHECK(which(cfg(2048, 11008, 16, 2)) == "3b");
  CHECK(which(cfg(3584, 18944, 28, 4)) == "7b");
  CHECK(which(cfg(5120, 13824, 40, 8)) == "14b");
  CHECK(which(cfg(5120, 27648, 40, 8)) == "32b");
  CHECK(which(cfg(8192, 29568, 64, 8)) == "72b");
  CHECK(which(cfg(128, 384, 4, 2)) == "tiny");
}

TEST_CASE("an unknown shape is refused with the list of shapes and how to add one") {
  auto c = cfg(1024, 4096, 16, 4);
  try {
    which(c);
    FAIL("no error");
  } catch (const error& e) {
    const std::string m = e.what();
    CHECK(m.find("config.json") != std::string::npos);
    CHECK(m.find("hidden 1024") != std::string::npos);
    CHECK(m.find("1.5b (hidden 1536, intermediate 8960") != std::string::npos);
    CHECK(m.find("To add one") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(models::dispatch_shape_name("2b", []<class S>() { return 0; }), doctest::Contains("known sizes: tiny, 0.5b"),
                       error);
}
