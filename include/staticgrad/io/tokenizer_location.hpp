#pragma once
// Which tokenizer a command uses when --tokenizer is not given:
//   1. the model directory's own tokenizer.json (what the model was trained
//      with; its tokenizer_config.json gives the chat template, see
//      infer/chat_template.hpp);
//   2. the vendored Qwen2 tokenizer that is installed with the binary, found
//      relative to the running executable (/proc/self/exe), never through a
//      path compiled in, so an install moved elsewhere still finds it:
//        <exe dir>/../share/staticgrad/qwen2-tokenizer   (cmake --install layout)
//        <exe dir>/share/staticgrad/qwen2-tokenizer      (the build tree: CMake copies it there)
#include <filesystem>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"

namespace staticgrad::io {

inline std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

inline std::vector<std::filesystem::path> vendored_tokenizer_candidates() {
  const auto dir = executable_dir();
  if (dir.empty()) return {};
  return {dir.parent_path() / "share" / "staticgrad" / "qwen2-tokenizer", dir / "share" / "staticgrad" / "qwen2-tokenizer"};
}

// The vendored tokenizer's directory; throws listing the places looked in.
inline std::filesystem::path vendored_tokenizer() {
  std::string tried;
  std::error_code ec;
  for (const auto& p : vendored_tokenizer_candidates()) {
    if (std::filesystem::exists(p / "tokenizer.json.gz", ec) || std::filesystem::exists(p / "tokenizer.json", ec))
      return p;
    tried += "\n  " + p.string();
  }
  throw error("the vendored Qwen2 tokenizer was not found next to the staticgrad executable; looked in:" + tried +
              "\nPass --tokenizer PATH (a tokenizer.json or a directory holding one), or reinstall (cmake --install "
              "puts it in <prefix>/share/staticgrad/qwen2-tokenizer)");
}

// --tokenizer if given, else the model directory's tokenizer.json, else the
// vendored one.
inline std::string resolve_tokenizer(const std::string& explicit_path, const std::string& model_dir = {}) {
  if (!explicit_path.empty()) return explicit_path;
  std::error_code ec;
  if (!model_dir.empty() && std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json", ec))
    return (std::filesystem::path(model_dir) / "tokenizer.json").string();
  return vendored_tokenizer().string();
}

}  // namespace staticgrad::io
