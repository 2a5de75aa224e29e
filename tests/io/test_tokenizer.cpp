// The Qwen2 tokenizer against Hugging Face `tokenizers`: every case of
// tests/fixtures/tokenizer/qwen2_cases.json (written by
// scripts/make_tokenizer_fixture.py) must give the same pre-tokenizer pieces,
// the same ids and the same decoded text.
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "staticgrad/io/tokenizer.hpp"

using staticgrad::io::tokenizer;

namespace {

const std::string root = STATICGRAD_SOURCE_DIR;

const tokenizer& qwen() {
  static tokenizer t = tokenizer::from_file(root + "/data/qwen2-tokenizer");
  return t;
}

const nlohmann::json& fixture() {
  static nlohmann::json j = [] {
    std::ifstream f(root + "/tests/fixtures/tokenizer/qwen2_cases.json");
    return nlohmann::json::parse(f);
  }();
  return j;
}

}  // namespace

TEST_CASE("vendored tokenizer loads with the Qwen2 specials") {
  const auto& t = qwen();
  CHECK(t.vocab_size() == 151665);
  CHECK(t.token_to_id("<|endoftext|>") == 151643);
  CHECK(t.token_to_id("<|im_start|>") == 151644);
  CHECK(t.token_to_id("<|im_end|>") == 151645);
  CHECK(t.is_special(151643));
  CHECK_FALSE(t.is_special(151657));  // <tool_call> is added but not special
}

TEST_CASE("pre-tokenizer pieces match tokenizers") {
  int checked = 0;
  for (const auto& c : fixture()["cases"]) {
    if (c["pieces"].is_null()) continue;
    std::string norm = staticgrad::io::unicode::nfc(c["text"].get<std::string>());
    auto got = tokenizer::pretokens(norm);
    std::vector<std::string> expected = c["pieces"].get<std::vector<std::string>>();
    INFO("case " << c["name"].get<std::string>());
    REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(std::string(got[i]) == expected[i]);
    ++checked;
  }
  CHECK(checked > 180);  // cases with added tokens have no pieces
}

TEST_CASE("ids and decode match tokenizers on every fixture case") {
  const auto& t = qwen();
  int checked = 0;
  for (const auto& c : fixture()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    auto expected = c["ids"].get<std::vector<std::int32_t>>();
    INFO("case " << c["name"].get<std::string>());
    auto ids = t.encode(text);
    CHECK(ids == expected);
    CHECK(t.decode(expected) == c["decoded"].get<std::string>());
    CHECK(t.decode(expected, true) == c["decoded_skip_special"].get<std::string>());
    // Round trip: decode(encode(t)) is what tokenizers' decode gives (t with
    // NFC between its added tokens, docs/tokenizer.md); with added tokens as
    // plain text it is the NFC form of t.
    CHECK(t.decode(ids) == c["decoded"].get<std::string>());
    CHECK(t.decode(t.encode(text, false)) == staticgrad::io::unicode::nfc(text));
    ++checked;
  }
  CHECK(checked == int(fixture()["cases"].size()));
}

TEST_CASE("token spans tile the raw text") {
  const auto& t = qwen();
  int changed_by_nfc = 0;
  for (const auto& c : fixture()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const bool is_nfc = staticgrad::io::unicode::nfc(text) == text;
    changed_by_nfc += !is_nfc;
    std::vector<std::int32_t> ids;
    std::vector<staticgrad::io::token_span> spans;
    t.encode_into(text, ids, &spans);
    INFO("case " << c["name"].get<std::string>());
    REQUIRE(spans.size() == ids.size());
    std::uint32_t at = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      CHECK(spans[i].begin == at);
      CHECK(spans[i].end >= spans[i].begin);
      // Where NFC left the text alone, each span holds exactly the token's bytes.
      if (is_nfc) CHECK(text.substr(spans[i].begin, spans[i].end - spans[i].begin) == t.id_to_bytes(ids[i]));
      at = spans[i].end;
    }
    CHECK(at == text.size());
  }
  CHECK(changed_by_nfc > 0);
}

TEST_CASE("batch encode on threads equals one-by-one encode") {
  const auto& t = qwen();
  std::vector<std::string> texts;
  for (const auto& c : fixture()["cases"]) texts.push_back(c["text"].get<std::string>());
  for (unsigned threads : {4u, 2u, 3u, 1u}) {  // the worker pool is reused and grows
    auto batch = t.encode_batch(texts, threads);
    REQUIRE(batch.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) CHECK(batch[i] == t.encode(texts[i]));
  }
  // An error on a worker reaches the caller, and the pool stays usable.
  auto bad = texts;
  bad[bad.size() / 2] = "\xff";
  CHECK_THROWS_AS(t.encode_batch(bad, 3), staticgrad::error);
  CHECK(t.encode_batch(texts, 3) == t.encode_batch(texts, 1));
}

TEST_CASE("split_added = false encodes special strings as text") {
  const auto& t = qwen();
  auto ids = t.encode("<|im_end|>", false);
  CHECK(ids.size() > 1);
  CHECK(t.decode(ids) == "<|im_end|>");
}

TEST_CASE("bad input gets errors, not crashes") {
  const auto& t = qwen();
  CHECK_THROWS_AS(t.encode(std::string("ok \xff bad")), staticgrad::error);
  CHECK_THROWS_AS(t.encode(std::string("\xed\xa0\x80")), staticgrad::error);  // UTF-8 surrogate
  CHECK_THROWS_AS(t.decode(std::vector<std::int32_t>{-1}), staticgrad::error);
  CHECK_THROWS_AS(t.decode(std::vector<std::int32_t>{1 << 30}), staticgrad::error);
  // A lone continuation byte token decodes to U+FFFD, as tokenizers does.
  CHECK(t.decode(std::vector<std::int32_t>{t.token_to_id("\xc3")}) == "\xEF\xBF\xBD");
  CHECK_THROWS_AS(tokenizer::from_json("{"), staticgrad::error);
  CHECK_THROWS_AS(tokenizer::from_json(R"({"model": {"type": "Unigram"}})"), staticgrad::error);
  CHECK_THROWS_AS(tokenizer::from_file(root + "/no/such/dir"), staticgrad::error);
  try {
    tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "NFKC"}})",
                         "x.json");
    FAIL("expected an error");
  } catch (const staticgrad::error& e) {
    CHECK(e.context().file == "x.json");
    CHECK(e.context().tensor == "normalizer");
  }
}

TEST_CASE("the word cache starts over when full without changing results") {
  const auto& t = qwen();
  // 300,000 distinct words (more than the 2^18 a thread's cache holds), each
  // its own pre-token " xyz", encoded on a fresh thread (an empty cache).
  std::string text;
  std::vector<std::string> words;
  for (int i = 0; i < 300000; ++i) {
    std::string w = " ";
    for (int k = i; ; k /= 26) { w += char('a' + k % 26); if (k < 26) break; }
    words.push_back(w);
    text += w;
  }
  std::vector<std::int32_t> whole, pieces;
  std::thread([&] {
    whole = t.encode(text);
    for (const auto& w : words) {
      auto ids = t.encode(w);
      pieces.insert(pieces.end(), ids.begin(), ids.end());
    }
  }).join();
  CHECK(whole == pieces);
}
