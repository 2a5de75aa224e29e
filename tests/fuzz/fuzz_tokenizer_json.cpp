// libFuzzer: tokenizer.json text -> tokenizer::from_json, then a short encode
// and decode with what was loaded.
#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sg_fuzz::expect_clean([&] {
    const auto tok = staticgrad::io::tokenizer::from_json(std::string(sg_fuzz::as_text(data, size)), "tokenizer.json");
    const auto ids = tok.encode("Hello, world! 123 <|endoftext|> \xc3\xa9t\xc3\xa9");
    (void)tok.decode(ids, true);
    (void)tok.vocab_size();
  });
}
