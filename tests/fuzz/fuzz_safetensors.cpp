// libFuzzer: safetensors bytes -> parse_safetensors, then every tensor read
// with its dtype's meaning, as a loader would (floats converted and checked
// for finiteness, integers read exactly).
#include <span>

#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return sg_fuzz::expect_clean([&] {
    const auto all = std::as_bytes(std::span<const std::uint8_t>(data, size));
    const auto parsed = staticgrad::io::parse_safetensors(all, "fuzz.safetensors");
    double sink = 0;
    for (const auto& t : parsed.tensors) {
      if (staticgrad::io::is_float_dtype(t.dtype)) {
        (void)staticgrad::io::first_non_finite(t);
        for (float x : staticgrad::io::to_f32(t)) sink += x;
      } else {
        for (auto x : staticgrad::io::to_i64(t)) sink += double(x);
      }
      (void)t.shape_string();
    }
    if (sink == 0.5) std::fprintf(stderr, " ");  // keep the reads
  });
}
