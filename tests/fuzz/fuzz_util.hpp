#pragma once
// Shared by the libFuzzer harnesses: every reader must either accept an input
// or throw staticgrad::error. Any other exception is a finding and aborts,
// like a sanitizer report, so libFuzzer saves the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "staticgrad/core/error.hpp"

namespace sg_fuzz {

template <class F>
int expect_clean(F&& body) {
  try {
    body();
  } catch (const staticgrad::error&) {
    // a clear rejection: the expected outcome for most inputs
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: exception other than staticgrad::error: %s\n", e.what());
    std::abort();
  }
  return 0;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The source tree (for the vendored tokenizer), given by CMake.
inline std::string source_dir() { return STATICGRAD_SOURCE_DIR; }

}  // namespace sg_fuzz
