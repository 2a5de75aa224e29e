#pragma once
// Hugging Face config.json of a Qwen2 / Qwen2.5 model.
//
// Invariants of a parsed `hf_config` (each violation throws naming the file
// and the key):
//  - all sizes are positive and at most the stated maxima below (so every
//    product of two of them fits in int64 and none sizes a runaway
//    allocation); num_attention_heads % num_key_value_heads == 0
//    (GQA groups); head_dim defaults to hidden_size / num_attention_heads,
//    which must then divide exactly;
//  - rope_theta > 0 and rms_norm_eps > 0, finite;
//  - model_type "qwen2", hidden_act "silu", default RoPE (no scaling), no
//    sliding window: the only variant staticgrad computes, so other values are
//    rejected instead of silently computing something else.
// Both spellings are read: `rope_theta` (older) or `rope_parameters.rope_theta`
// (transformers >= 5), `torch_dtype` (older) or `dtype` (newer). If both are
// present they must agree.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/bounds.hpp"
#include "staticgrad/io/json_util.hpp"

namespace staticgrad::io {

struct hf_config {
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  // hidden_size / num_attention_heads when absent
  std::int64_t vocab_size = 0;
  double rope_theta = 1e6;     // RoPE base; Qwen2.5 uses 1e6
  double rms_norm_eps = 1e-6;  // 1e-6 or 1e-5 depending on the checkpoint
  bool tie_word_embeddings = false;  // transformers' default for Qwen2 when absent
  std::string dtype = "float32";     // torch dtype name of the stored weights; HF default when absent
  std::int64_t max_position_embeddings = 32768;
  std::string model_type = "qwen2";
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;  // config.json may hold one id or a list
  std::vector<std::string> architectures = {"Qwen2ForCausalLM"};
  json raw = json::object();  // the document read, so writers can keep keys we do not model

  // Query width (heads * head_dim) and key/value width (kv_heads * head_dim).
  std::int64_t q_dim() const { return num_attention_heads * head_dim; }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// Upper bounds on config.json sizes: far above any Qwen2 (72B: hidden 8192,
// intermediate 29568, 80 layers, 64 heads, vocab 152064), low enough that
// products such as vocab * hidden or layers * intermediate * hidden fit in
// int64 without overflow.
inline constexpr std::int64_t max_config_width = std::int64_t(1) << 20;   // hidden, intermediate, head_dim
inline constexpr std::int64_t max_config_vocab = std::int64_t(1) << 22;   // vocab_size
inline constexpr std::int64_t max_config_layers = 1024;                   // num_hidden_layers
inline constexpr std::int64_t max_config_heads = 4096;                    // attention and key/value heads
inline constexpr std::int64_t max_config_positions = std::int64_t(1) << 24;  // max_position_embeddings

namespace detail {
inline std::int64_t bounded_size(const json& j, const char* key, std::int64_t max, const std::string& file) {
  const std::int64_t v = require_positive_int(j, key, file);
  if (v > max)
    throw error("value " + std::to_string(v) + " exceeds the limit of " + std::to_string(max), {file, key, {}});
  return v;
}

inline std::optional<std::int64_t> optional_token_id(const json& j, const char* key, const std::string& file) {
  const json* v = find_key(j, key);
  if (!v || v->is_null()) return std::nullopt;
  return json_int(*v, file, key);
}
}  // namespace detail

inline hf_config parse_hf_config(const json& j, const std::string& file) {
  if (!j.is_object()) throw error("config.json must be a JSON object", {file, {}, {}});
  hf_config c;
  c.raw = j;
  c.hidden_size = detail::bounded_size(j, "hidden_size", max_config_width, file);
  c.intermediate_size = detail::bounded_size(j, "intermediate_size", max_config_width, file);
  c.num_hidden_layers = detail::bounded_size(j, "num_hidden_layers", max_config_layers, file);
  c.num_attention_heads = detail::bounded_size(j, "num_attention_heads", max_config_heads, file);
  c.num_key_value_heads = find_key(j, "num_key_value_heads") && !j["num_key_value_heads"].is_null()
                              ? detail::bounded_size(j, "num_key_value_heads", max_config_heads, file)
                              : c.num_attention_heads;  // transformers' default: MHA
  c.vocab_size = detail::bounded_size(j, "vocab_size", max_config_vocab, file);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw error("num_attention_heads (" + std::to_string(c.num_attention_heads) +
                    ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")",
                {file, "num_key_value_heads", {}});
  if (const json* hd = find_key(j, "head_dim"); hd && !hd->is_null()) {
    c.head_dim = detail::bounded_size(j, "head_dim", max_config_width, file);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      throw error("hidden_size must be divisible by num_attention_heads when head_dim is absent",
                  {file, "head_dim", {}});
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) throw error("head_dim must be even (RoPE rotates halves)", {file, "head_dim", {}});

  // RoPE: rope_parameters (new) and/or rope_theta (old).
  std::optional<double> theta_old, theta_new;
  if (const json* v = find_key(j, "rope_theta"); v && !v->is_null()) theta_old = json_number(*v, file, "rope_theta");
  if (const json* rp = find_key(j, "rope_parameters"); rp && !rp->is_null()) {
    if (!rp->is_object()) throw error("expected an object", {file, "rope_parameters", {}});
    if (const json* v = find_key(*rp, "rope_theta"); v && !v->is_null())
      theta_new = json_number(*v, file, "rope_parameters.rope_theta");
    if (const json* t = find_key(*rp, "rope_type"); t && !t->is_null()) {
      const std::string ty = json_string(*t, file, "rope_parameters.rope_type");
      if (ty != "default")
        throw error("unsupported RoPE type \"" + ty + "\" (only \"default\" is implemented)",
                    {file, "rope_parameters.rope_type", {}});
    }
  }
  if (const json* rs = find_key(j, "rope_scaling"); rs && !rs->is_null()) {
    const json* t = find_key(*rs, "rope_type");
    if (!t) t = find_key(*rs, "type");
    if (!rs->is_object() || !t || !t->is_string() || t->get<std::string>() != "default")
      throw error("RoPE scaling is not supported (expected null or rope_type \"default\")", {file, "rope_scaling", {}});
  }
  if (theta_old && theta_new && *theta_old != *theta_new)
    throw error("rope_theta and rope_parameters.rope_theta disagree", {file, "rope_theta", {}});
  if (theta_new) c.rope_theta = *theta_new;
  else if (theta_old) c.rope_theta = *theta_old;
  else throw error("missing rope_theta (expected rope_theta or rope_parameters.rope_theta)", {file, "rope_theta", {}});
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    throw error("rope_theta must be a positive finite number", {file, "rope_theta", {}});

  c.rms_norm_eps = json_number(require_key(j, "rms_norm_eps", file), file, "rms_norm_eps");
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps))
    throw error("rms_norm_eps must be a positive finite number", {file, "rms_norm_eps", {}});

  if (const json* v = find_key(j, "tie_word_embeddings"); v && !v->is_null())
    c.tie_word_embeddings = json_bool(*v, file, "tie_word_embeddings");

  std::optional<std::string> d_old, d_new;
  if (const json* v = find_key(j, "torch_dtype"); v && !v->is_null()) d_old = json_string(*v, file, "torch_dtype");
  if (const json* v = find_key(j, "dtype"); v && !v->is_null()) d_new = json_string(*v, file, "dtype");
  if (d_old && d_new && *d_old != *d_new) throw error("torch_dtype and dtype disagree", {file, "dtype", {}});
  if (d_new) c.dtype = *d_new;
  else if (d_old) c.dtype = *d_old;
  if (c.dtype != "float32" && c.dtype != "bfloat16" && c.dtype != "float16")
    throw error("unsupported dtype \"" + c.dtype + "\" (expected float32, bfloat16 or float16)", {file, "dtype", {}});

  if (const json* v = find_key(j, "max_position_embeddings"); v && !v->is_null())
    c.max_position_embeddings = detail::bounded_size(j, "max_position_embeddings", max_config_positions, file);
  c.model_type = json_string(require_key(j, "model_type", file), file, "model_type");
  if (c.model_type != "qwen2")
    throw error("unsupported model_type \"" + c.model_type + "\" (expected \"qwen2\")", {file, "model_type", {}});
  if (const json* v = find_key(j, "hidden_act"); v && !v->is_null()) {
    if (json_string(*v, file, "hidden_act") != "silu")
      throw error("unsupported hidden_act (expected \"silu\")", {file, "hidden_act", {}});
  }
  if (const json* v = find_key(j, "use_sliding_window"); v && !v->is_null() && json_bool(*v, file, "use_sliding_window"))
    throw error("sliding-window attention is not supported (expected false)", {file, "use_sliding_window", {}});

  c.bos_token_id = detail::optional_token_id(j, "bos_token_id", file);
  if (const json* v = find_key(j, "eos_token_id"); v && !v->is_null()) {
    if (v->is_array())
      for (const json& e : *v) c.eos_token_ids.push_back(json_int(e, file, "eos_token_id"));
    else
      c.eos_token_ids.push_back(json_int(*v, file, "eos_token_id"));
  }
  c.architectures.clear();
  if (const json* v = find_key(j, "architectures"); v && !v->is_null()) {
    if (!v->is_array()) throw error("expected a list of strings", {file, "architectures", {}});
    for (const json& e : *v) c.architectures.push_back(json_string(e, file, "architectures"));
  }
  return c;
}

// `path`: a config.json file or a model directory holding one.
inline hf_config read_hf_config(const std::filesystem::path& path) {
  std::error_code ec;
  const auto p = std::filesystem::is_directory(path, ec) ? path / "config.json" : path;
  return parse_hf_config(read_json_file(p), p.string());
}

// The JSON transformers 5.x loads as Qwen2ForCausalLM. Keys of `raw` that we
// do not model are kept; both spellings of rope_theta and dtype are written so
// older transformers read the file too.
inline json to_json(const hf_config& c) {
  json j = c.raw.is_object() ? c.raw : json::object();
  j["architectures"] = c.architectures.empty() ? std::vector<std::string>{"Qwen2ForCausalLM"} : c.architectures;
  j["model_type"] = "qwen2";
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["rope_theta"] = c.rope_theta;
  j["rope_parameters"] = {{"rope_theta", c.rope_theta}, {"rope_type", "default"}};
  j.erase("rope_scaling");
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["dtype"] = c.dtype;
  j["torch_dtype"] = c.dtype;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["use_sliding_window"] = false;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  return j;
}

// Writes config.json atomically; `path` is a file or a directory.
inline void write_hf_config(const std::filesystem::path& path, const hf_config& c) {
  std::error_code ec;
  const auto p = std::filesystem::is_directory(path, ec) ? path / "config.json" : path;
  write_text_atomic(p, to_json(c).dump(2) + "\n");
}

}  // namespace staticgrad::io
