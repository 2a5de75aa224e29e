// libFuzzer: the Qwen2 tokenizer's encode and decode on arbitrary bytes.
// Oracles: encode either accepts (valid UTF-8) or throws staticgrad::error;
// decode(encode(t)) is t with its added tokens kept verbatim and the text
// between them NFC-normalized (docs/tokenizer.md: added tokens are matched in
// the raw text first, as Hugging Face `tokenizers` does, so NFC never joins
// an added token's last character with what follows it); with added tokens
// read as plain text, decode(encode(t, false)) == NFC(t); every token span
// lies inside t; the same input read as little-endian int32 ids decodes or is
// refused, never read out of range.
#include <cstring>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "fuzz/qwen_tokenizer.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/unicode.hpp"

namespace {
using sg_fuzz::qwen;

// The expected round trip, computed apart from the tokenizer's own splitting:
// a scan for the leftmost, then longest, added token; NFC of each gap. (The
// Qwen2 tokenizer's added tokens are all matched in the raw text.)
std::string expected_round_trip(std::string_view t) {
  std::string out;
  std::size_t gap = 0, i = 0;
  while (i < t.size()) {
    std::size_t best = 0;
    for (const auto& a : qwen().added_tokens())
      if (a.content.size() > best && t.substr(i, a.content.size()) == a.content) best = a.content.size();
    if (best == 0) {
      ++i;
      continue;
    }
    out += staticgrad::io::unicode::nfc(t.substr(gap, i - gap));
    out += t.substr(i, best);
    i += best;
    gap = i;
  }
  return out + staticgrad::io::unicode::nfc(t.substr(gap));
}

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "finding: %s\n", what);
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)qwen();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace staticgrad::io;
  const std::string_view text = sg_fuzz::as_text(data, size);
  sg_fuzz::expect_clean([&] {
    std::vector<std::int32_t> ids;
    std::vector<token_span> spans;
    qwen().encode_into(text, ids, &spans);
    if (spans.size() != ids.size()) finding("one span per id expected");
    for (const auto& s : spans)
      if (s.begin > s.end || s.end > text.size()) finding("a token span outside the text");
    if (qwen().decode(ids) != expected_round_trip(text))
      finding("decode(encode(text)) differs from text with NFC between its added tokens");
    if (qwen().decode(qwen().encode(text, false)) != unicode::nfc(text))
      finding("decode(encode(text, no added tokens)) differs from NFC(text)");
  });
  sg_fuzz::expect_clean([&] {
    std::vector<std::int32_t> ids(size / 4);
    if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
    (void)qwen().decode(ids, (size & 1) != 0);
  });
  return 0;
}
