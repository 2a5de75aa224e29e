// libFuzzer: the Qwen2 tokenizer's encode and decode on arbitrary bytes.
// Oracles: encode either accepts (valid UTF-8) or throws staticgrad::error;
// decode(encode(t)) == NFC(t) (docs/tokenizer.md); the same input read as
// little-endian int32 ids decodes or is refused, never read out of range.
#include <cstring>
#include <vector>

#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/tokenizer.hpp"

namespace {
const staticgrad::io::tokenizer& qwen() {
  static const auto tok = staticgrad::io::tokenizer::from_file(sg_fuzz::source_dir() + "/data/qwen2-tokenizer");
  return tok;
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
    if (spans.size() != ids.size()) std::abort();
    const std::string back = qwen().decode(ids);
    if (back != unicode::nfc(text)) {
      std::fprintf(stderr, "finding: decode(encode(text)) differs from NFC(text)\n");
      std::abort();
    }
  });
  sg_fuzz::expect_clean([&] {
    std::vector<std::int32_t> ids(size / 4);
    if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
    (void)qwen().decode(ids, (size & 1) != 0);
  });
  return 0;
}
