#pragma once
// generation_config.json of a model directory, the defaults `generate` starts
// from (the command line overrides each): do_sample, temperature, top_p,
// top_k, repetition_penalty, max_new_tokens and eos_token_id (one id or a
// list: generation stops at any of them). Absent keys keep transformers'
// defaults (greedy, temperature 1, top_p 1, top_k 50, no penalty); without
// the file, the stop ids are config.json's eos_token_id, as transformers
// derives a generation config from the model config.
// Qwen2.5-Instruct ships do_sample true, temperature 0.7, top_p 0.8, top_k 20,
// repetition_penalty 1.05 and eos_token_id [151645, 151643]
// (<|im_end|>, <|endoftext|>).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/infer/sampling.hpp"

namespace staticgrad::infer {

struct generation_config {
  sampling_options sampling;
  std::optional<std::int64_t> max_new_tokens;
  std::vector<std::int32_t> eos_token_ids;
  bool from_file = false;
};

inline generation_config read_generation_config(const std::filesystem::path& model_dir, const io::hf_config& model) {
  generation_config g;
  for (auto id : model.eos_token_ids) g.eos_token_ids.push_back(std::int32_t(id));
  const auto path = model_dir / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return g;
  const std::string file = path.string();
  const io::json j = io::read_json_file(path);
  require(j.is_object(), "generation_config.json must be a JSON object", {file, "", {}});
  g.from_file = true;
  auto number = [&](const char* key, double& dst) {
    if (const io::json* v = io::find_key(j, key); v && !v->is_null()) dst = io::json_number(*v, file, key);
  };
  if (const io::json* v = io::find_key(j, "do_sample"); v && !v->is_null())
    g.sampling.do_sample = io::json_bool(*v, file, "do_sample");
  number("temperature", g.sampling.temperature);
  number("top_p", g.sampling.top_p);
  number("repetition_penalty", g.sampling.repetition_penalty);
  if (const io::json* v = io::find_key(j, "top_k"); v && !v->is_null())
    g.sampling.top_k = io::json_int(*v, file, "top_k");
  if (const io::json* v = io::find_key(j, "max_new_tokens"); v && !v->is_null())
    g.max_new_tokens = io::json_int(*v, file, "max_new_tokens");
  if (const io::json* v = io::find_key(j, "eos_token_id"); v && !v->is_null()) {
    g.eos_token_ids.clear();
    if (v->is_array())
      for (const io::json& e : *v) g.eos_token_ids.push_back(std::int32_t(io::json_int(e, file, "eos_token_id")));
    else
      g.eos_token_ids.push_back(std::int32_t(io::json_int(*v, file, "eos_token_id")));
  }
  try {
    check_sampling(g.sampling);
  } catch (const error& e) {
    throw error(e.message(), {file, e.context().tensor, {}});
  }
  return g;
}

}  // namespace staticgrad::infer
