#pragma once
// The vendored Qwen2 tokenizer for the harnesses that encode text (tokenizer,
// dataset), loaded once per process. Looked for beside the harness first
// (<bin>/../data/qwen2-tokenizer: the layout of the bundle that
// scripts/fuzz_device.sh runs on another machine), else in the source tree.
#include <filesystem>

#include "fuzz/fuzz_util.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/io/tokenizer_location.hpp"

namespace sg_fuzz {

inline std::string qwen_tokenizer_dir() {
  const auto beside = staticgrad::io::executable_dir().parent_path() / "data" / "qwen2-tokenizer";
  std::error_code ec;
  if (std::filesystem::exists(beside / "tokenizer.json.gz", ec)) return beside.string();
  return source_dir() + "/data/qwen2-tokenizer";
}

inline const staticgrad::io::tokenizer& qwen() {
  static const auto tok = staticgrad::io::tokenizer::from_file(qwen_tokenizer_dir());
  return tok;
}

}  // namespace sg_fuzz
