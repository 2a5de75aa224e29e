#pragma once
// What tests/train/test_trainer.cpp and test_evaluate_merge.cpp share (one
// suite in two TUs: in one, the trainer, evaluate_file and merge took 28-36 s
// and 1.38 GB): the tiny CPU model, the vendored tokenizer, scratch directories.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/models/qwen2_model.hpp"

namespace sgtest {

using trainer_model = staticgrad::models::qwen2_model<staticgrad::models::qwen2_tiny>;

// BUILD/train_out/<name>, empty.
inline std::filesystem::path scratch(const std::string& name) {
  auto p = std::filesystem::path(STATICGRAD_BINARY_DIR) / "train_out" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

inline const staticgrad::io::tokenizer& qwen_tokenizer() {
  static const auto tok =
      staticgrad::io::tokenizer::from_file(std::string(STATICGRAD_SOURCE_DIR) + "/data/qwen2-tokenizer");
  return tok;
}

}  // namespace sgtest
