#pragma once
// PEFT LoRA adapters for Qwen2, in the layout PEFT 0.21 writes and reads
// (PeftModel.from_pretrained):
//   DIR/adapter_config.json       peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha, ...
//   DIR/adapter_model.safetensors metadata {"format": "pt"}; per layer N and target module
//     base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight
//     base_model.model.model.layers.N.mlp.{gate,up,down}_proj.lora_{A,B}.weight
//   lora_A: [r, in_features], lora_B: [out_features, r] (row-major, like nn.Linear.weight).
// The forward is y = x W^T (+ b) + scaling * (x A^T) B^T with
// scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.
//
// Invariants:
//  - We write LoRA weights as F32 (staticgrad keeps LoRA parameters in f32;
//    PEFT loads F32 into an f32 or bf16 model alike). Reading also accepts
//    BF16 and F16 (converted to f32).
//  - r is at most max_lora_rank (65536); the adapter's size (products
//    checked for overflow) must fit the machine's memory before anything is
//    allocated, and when reading, every tensor's shape is checked against
//    the config (and so against the file's own length) before allocation.
//  - A read adapter holds finite values only (checked by default; the error
//    names the tensor and the element).
//  - A read adapter matches the model config: every targeted module of every
//    layer has both matrices with the exact shapes, and nothing else is in the
//    file. Options staticgrad does not implement (DoRA, LoRA bias, per-layer
//    rank/alpha patterns, layers_to_transform, modules_to_save, ...) are
//    rejected with the key named, never ignored.
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "staticgrad/io/bounds.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/safetensors_writer.hpp"

namespace staticgrad::io {

// The seven linear layers of a Qwen2 block that LoRA can adapt.
enum class lora_target : std::uint8_t { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
inline constexpr std::size_t num_lora_targets = 7;
inline constexpr std::array<lora_target, num_lora_targets> all_lora_targets = {
    lora_target::q_proj,    lora_target::k_proj,  lora_target::v_proj,   lora_target::o_proj,
    lora_target::gate_proj, lora_target::up_proj, lora_target::down_proj};

constexpr std::string_view target_name(lora_target t) {
  constexpr std::array<std::string_view, num_lora_targets> n = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"};
  return n[static_cast<std::size_t>(t)];
}
// Submodule of the decoder layer holding the projection.
constexpr std::string_view target_parent(lora_target t) {
  return static_cast<int>(t) <= static_cast<int>(lora_target::o_proj) ? "self_attn" : "mlp";
}
inline std::optional<lora_target> target_from_name(std::string_view s) {
  for (auto t : all_lora_targets)
    if (target_name(t) == s) return t;
  return std::nullopt;
}

// nn.Linear sizes of each projection: weight [out, in].
inline std::int64_t target_in_features(lora_target t, const hf_config& c) {
  switch (t) {
    case lora_target::o_proj: return c.q_dim();
    case lora_target::down_proj: return c.intermediate_size;
    default: return c.hidden_size;
  }
}
inline std::int64_t target_out_features(lora_target t, const hf_config& c) {
  switch (t) {
    case lora_target::q_proj: return c.q_dim();
    case lora_target::k_proj: case lora_target::v_proj: return c.kv_dim();
    case lora_target::gate_proj: case lora_target::up_proj: return c.intermediate_size;
    default: return c.hidden_size;
  }
}

// "model.layers.N.self_attn.q_proj" (the base module; append ".weight"/".bias").
inline std::string base_module_name(std::int64_t layer, lora_target t) {
  return "model.layers." + std::to_string(layer) + "." + std::string(target_parent(t)) + "." +
         std::string(target_name(t));
}
// PEFT key of lora_A (which = 'A') or lora_B (which = 'B').
inline std::string lora_key(std::int64_t layer, lora_target t, char which) {
  return "base_model.model." + base_module_name(layer, t) + ".lora_" + std::string(1, which) + ".weight";
}

// Largest LoRA rank accepted (from adapter_config.json or a flag): real
// adapters use 4..256; the bound keeps r * features far from int64 overflow.
inline constexpr std::int64_t max_lora_rank = 65536;

struct lora_config {
  std::int64_t r = 8;
  double lora_alpha = 16;
  double lora_dropout = 0;
  std::vector<lora_target> target_modules;  // canonical order (q, k, v, o, gate, up, down)
  bool use_rslora = false;
  std::optional<std::string> base_model_name_or_path;
  json raw = json::object();  // the document read (unknown keys kept on write)

  double scaling() const { return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r); }
  bool targets(lora_target t) const {
    for (auto x : target_modules)
      if (x == t) return true;
    return false;
  }
};

namespace detail {
// Keys PEFT writes whose non-default values change the computation.
inline void reject_unless(const json& j, const char* key, const json& allowed, const std::string& file,
                          const char* why) {
  const json* v = find_key(j, key);
  if (!v || v->is_null() || *v == allowed) return;
  if ((v->is_object() || v->is_array()) && v->empty() && (allowed.is_null() || allowed.empty())) return;
  throw error(std::string("unsupported value ") + v->dump() + ": " + why, {file, key, {}});
}
}  // namespace detail

inline lora_config parse_adapter_config(const json& j, const std::string& file) {
  if (!j.is_object()) throw error("adapter_config.json must be a JSON object", {file, {}, {}});
  lora_config c;
  c.raw = j;
  const std::string pt = json_string(require_key(j, "peft_type", file), file, "peft_type");
  if (pt != "LORA") throw error("expected peft_type \"LORA\", got \"" + pt + "\"", {file, "peft_type", {}});
  if (const json* t = find_key(j, "task_type"); t && !t->is_null() && json_string(*t, file, "task_type") != "CAUSAL_LM")
    throw error("expected task_type \"CAUSAL_LM\"", {file, "task_type", {}});
  c.r = require_positive_int(j, "r", file);
  if (c.r > max_lora_rank)
    throw error("r = " + std::to_string(c.r) + " exceeds the limit of " + std::to_string(max_lora_rank), {file, "r", {}});
  c.lora_alpha = json_number(require_key(j, "lora_alpha", file), file, "lora_alpha");
  if (!(c.lora_alpha > 0) || !std::isfinite(c.lora_alpha))
    throw error("lora_alpha must be a positive number", {file, "lora_alpha", {}});
  if (const json* v = find_key(j, "lora_dropout"); v && !v->is_null()) {
    c.lora_dropout = json_number(*v, file, "lora_dropout");
    if (!(c.lora_dropout >= 0 && c.lora_dropout < 1))
      throw error("lora_dropout must be in [0, 1)", {file, "lora_dropout", {}});
  }
  if (const json* v = find_key(j, "use_rslora"); v && !v->is_null()) c.use_rslora = json_bool(*v, file, "use_rslora");
  if (const json* v = find_key(j, "base_model_name_or_path"); v && !v->is_null())
    c.base_model_name_or_path = json_string(*v, file, "base_model_name_or_path");

  const json& tm = require_key(j, "target_modules", file);
  std::set<lora_target> ts;
  if (tm.is_string()) {
    if (tm.get<std::string>() != "all-linear")
      throw error("target_modules as a regular expression is not supported (expected a list, or \"all-linear\")",
                  {file, "target_modules", {}});
    ts.insert(all_lora_targets.begin(), all_lora_targets.end());
  } else if (tm.is_array()) {
    for (const json& e : tm) {
      const std::string s = json_string(e, file, "target_modules");
      auto t = target_from_name(s);
      if (!t)
        throw error("unsupported target module \"" + s + "\" (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                    {file, "target_modules", {}});
      ts.insert(*t);
    }
  } else {
    throw error("expected a list of module names", {file, "target_modules", {}});
  }
  if (ts.empty()) throw error("target_modules is empty", {file, "target_modules", {}});
  for (auto t : all_lora_targets)
    if (ts.count(t)) c.target_modules.push_back(t);

  detail::reject_unless(j, "bias", "none", file, "only bias \"none\" is implemented");
  detail::reject_unless(j, "use_dora", false, file, "DoRA is not implemented");
  detail::reject_unless(j, "fan_in_fan_out", false, file, "Qwen2 linears are not transposed (expected false)");
  detail::reject_unless(j, "lora_bias", false, file, "LoRA bias is not implemented");
  detail::reject_unless(j, "use_qalora", false, file, "QA-LoRA is not implemented");
  detail::reject_unless(j, "rank_pattern", json::object(), file, "per-module ranks are not implemented");
  detail::reject_unless(j, "alpha_pattern", json::object(), file, "per-module alphas are not implemented");
  for (const char* k : {"layers_to_transform", "layers_pattern", "modules_to_save", "layer_replication",
                        "target_parameters", "trainable_token_indices", "exclude_modules", "alora_invocation_tokens"})
    detail::reject_unless(j, k, nullptr, file, "not implemented (expected null)");
  return c;
}

inline lora_config read_adapter_config(const std::filesystem::path& path) {
  std::error_code ec;
  const auto p = std::filesystem::is_directory(path, ec) ? path / "adapter_config.json" : path;
  return parse_adapter_config(read_json_file(p), p.string());
}

// adapter_config.json with every key PEFT 0.21.2 writes (so PeftModel loads
// it without falling back to defaults), our values set.
inline json to_json(const lora_config& c) {
  json j = {
      {"alora_invocation_tokens", nullptr}, {"alpha_pattern", json::object()}, {"arrow_config", nullptr},
      {"auto_mapping", nullptr}, {"base_model_name_or_path", nullptr}, {"bias", "none"},
      {"corda_config", nullptr}, {"ensure_weight_tying", false}, {"eva_config", nullptr},
      {"exclude_modules", nullptr}, {"fan_in_fan_out", false}, {"inference_mode", true},
      {"init_lora_weights", true}, {"kasa_config", nullptr}, {"layer_replication", nullptr},
      {"layers_pattern", nullptr}, {"layers_to_transform", nullptr}, {"loftq_config", json::object()},
      {"lora_alpha", 16}, {"lora_bias", false}, {"lora_dropout", 0.0}, {"lora_ga_config", nullptr},
      {"megatron_config", nullptr}, {"megatron_core", "megatron.core"}, {"modules_to_save", nullptr},
      {"monteclora_config", nullptr}, {"peft_type", "LORA"}, {"peft_version", "0.21.2"},
      {"qalora_group_size", 16}, {"r", 8}, {"rank_pattern", json::object()}, {"revision", nullptr},
      {"target_modules", json::array()}, {"target_parameters", nullptr}, {"task_type", "CAUSAL_LM"},
      {"trainable_token_indices", nullptr}, {"use_bdlora", nullptr}, {"use_dora", false},
      {"use_qalora", false}, {"use_rslora", false}, {"velora_config", nullptr}};
  if (c.raw.is_object())
    for (auto it = c.raw.begin(); it != c.raw.end(); ++it)
      if (!j.contains(it.key())) j[it.key()] = it.value();
  j["r"] = c.r;
  // PEFT writes an int when the value is one (lora_alpha=16 -> 16).
  if (c.lora_alpha == std::floor(c.lora_alpha) && std::abs(c.lora_alpha) < 1e15)
    j["lora_alpha"] = static_cast<std::int64_t>(c.lora_alpha);
  else
    j["lora_alpha"] = c.lora_alpha;
  j["lora_dropout"] = c.lora_dropout;
  j["use_rslora"] = c.use_rslora;
  j["target_modules"] = json::array();
  for (auto t : c.target_modules) j["target_modules"].push_back(std::string(target_name(t)));
  if (c.base_model_name_or_path) j["base_model_name_or_path"] = *c.base_model_name_or_path;
  return j;
}

inline void write_adapter_config(const std::filesystem::path& path, const lora_config& c) {
  std::error_code ec;
  const auto p = std::filesystem::is_directory(path, ec) ? path / "adapter_config.json" : path;
  write_text_atomic(p, to_json(c).dump(2));
}

// The LoRA weights of a whole model, f32, row-major.
struct lora_adapter {
  struct pair {
    std::vector<float> a;  // lora_A [r, in]
    std::vector<float> b;  // lora_B [out, r]
  };
  lora_config config;
  std::int64_t num_layers = 0;
  std::vector<std::array<pair, num_lora_targets>> layers;  // empty pairs for modules not targeted

  pair& at(std::int64_t layer, lora_target t) { return layers.at(static_cast<std::size_t>(layer))[static_cast<std::size_t>(t)]; }
  const pair& at(std::int64_t layer, lora_target t) const {
    return layers.at(static_cast<std::size_t>(layer))[static_cast<std::size_t>(t)];
  }
};

// Floats of lora_A and lora_B of one targeted module: r * (in + out).
// `ctx` names where r came from. Throws on a rank out of range or overflow.
inline std::int64_t lora_pair_floats(std::int64_t r, lora_target t, const hf_config& model, const error_context& ctx) {
  require_in_range(r, 1, max_lora_rank, ctx);
  return checked_mul(r, checked_add(target_in_features(t, model), target_out_features(t, model), "LoRA width", ctx),
                     "LoRA size r * (in + out)", ctx);
}

// Bytes of a whole adapter; throws unless they fit this machine's memory.
inline std::uint64_t require_adapter_fits(const lora_config& config, const hf_config& model, const error_context& ctx) {
  std::int64_t floats = 0;
  for (auto t : config.target_modules) floats = checked_add(floats, lora_pair_floats(config.r, t, model, ctx), "LoRA size", ctx);
  const std::int64_t total = checked_mul(checked_mul(floats, model.num_hidden_layers, "LoRA size", ctx), 4, "LoRA bytes", ctx);
  require_fits_memory(std::uint64_t(total), "a LoRA adapter of rank " + std::to_string(config.r), ctx);
  return std::uint64_t(total);
}

// Zero-filled adapter with the shapes `config` and `model` imply. Sizes are
// checked (rank bound, overflow, memory) before anything is allocated.
inline lora_adapter make_lora_adapter(const lora_config& config, const hf_config& model) {
  require_adapter_fits(config, model, {"", "r", {}});
  lora_adapter ad;
  ad.config = config;
  ad.num_layers = model.num_hidden_layers;
  ad.layers.resize(static_cast<std::size_t>(model.num_hidden_layers));
  for (auto& layer : ad.layers)
    for (auto t : config.target_modules) {
      auto& p = layer[static_cast<std::size_t>(t)];
      p.a.assign(static_cast<std::size_t>(config.r * target_in_features(t, model)), 0.f);
      p.b.assign(static_cast<std::size_t>(target_out_features(t, model) * config.r), 0.f);
    }
  return ad;
}

struct adapter_read_options {
  bool check_finite = true;  // refuse NaN / infinity in lora_A / lora_B (one pass over the bytes)
};

// Reads DIR/adapter_config.json and DIR/adapter_model.safetensors and checks
// them against the base model's config. Every tensor is validated (presence,
// dtype, shape, finiteness) before the adapter is allocated, so a wrong r in
// adapter_config.json fails on the shape, not on a huge allocation.
inline lora_adapter read_peft_adapter(const std::filesystem::path& dir, const hf_config& model,
                                      adapter_read_options opt = {}) {
  const auto cpath = dir / "adapter_config.json";
  const lora_config config = read_adapter_config(cpath);
  const auto wpath = dir / "adapter_model.safetensors";
  std::error_code ec;
  if (!std::filesystem::exists(wpath, ec))
    throw error("missing adapter_model.safetensors (adapter_model.bin is not supported)", {wpath.string(), {}, {}});
  safetensors_file f(wpath);
  std::set<std::string> expected;
  const std::int64_t r = config.r;
  for (std::int64_t l = 0; l < model.num_hidden_layers; ++l)
    for (auto t : config.target_modules) {
      for (char w : {'A', 'B'}) {
        const std::string key = lora_key(l, t, w);
        expected.insert(key);
        const tensor_view* tv = f.find(key);
        if (!tv)
          throw error("missing LoRA tensor (adapter_config.json targets " + std::string(target_name(t)) + ")",
                      {f.path(), key, {}});
        if (!is_float_dtype(tv->dtype))
          throw error("LoRA weights must be F32, BF16 or F16, got " + std::string(st_dtype_name(tv->dtype)),
                      {f.path(), key, {}});
        if (w == 'A') require_shape(*tv, {r, target_in_features(t, model)});
        else require_shape(*tv, {target_out_features(t, model), r});
        if (opt.check_finite) require_finite(*tv);
      }
    }
  for (const auto& tv : f.tensors())
    if (!expected.count(tv.name))
      throw error("unexpected tensor: not a LoRA matrix of a targeted module of a layer below " +
                      std::to_string(model.num_hidden_layers) + " (r=" + std::to_string(r) + ")",
                  {f.path(), tv.name, {}});
  lora_adapter ad = make_lora_adapter(config, model);  // sizes now known to match the file
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : config.target_modules) {
      to_f32(f.at(lora_key(l, t, 'A')), ad.at(l, t).a);
      to_f32(f.at(lora_key(l, t, 'B')), ad.at(l, t).b);
    }
  return ad;
}

// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (F32,
// metadata {"format": "pt"}); creates DIR if needed. Each file is atomic.
inline void write_peft_adapter(const std::filesystem::path& dir, const lora_adapter& ad, const hf_config& model) {
  // Refuse to write what read_peft_adapter (and PEFT) would reject.
  require_in_range(ad.config.r, 1, max_lora_rank, {dir.string(), "r", {}});
  if (!(ad.config.lora_alpha > 0)) throw error("lora_alpha must be positive", {dir.string(), "lora_alpha", {}});
  if (ad.config.target_modules.empty()) throw error("target_modules is empty", {dir.string(), "target_modules", {}});
  if (ad.num_layers != model.num_hidden_layers || ad.layers.size() != static_cast<std::size_t>(ad.num_layers))
    throw error("the adapter has " + std::to_string(ad.num_layers) + " layers, the model " +
                    std::to_string(model.num_hidden_layers),
                {dir.string(), "num_hidden_layers", {}});
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw error("cannot create the adapter directory: " + ec.message(), {dir.string(), {}, {}});
  std::vector<tensor_data> ts;
  std::vector<std::string> names;
  for (std::int64_t l = 0; l < ad.num_layers; ++l)
    for (auto t : ad.config.target_modules) {
      const auto& p = ad.at(l, t);
      const std::int64_t in = target_in_features(t, model), out = target_out_features(t, model), r = ad.config.r;
      const std::string ka = lora_key(l, t, 'A'), kb = lora_key(l, t, 'B');
      if (p.a.size() != static_cast<std::size_t>(r * in))
        throw error("lora_A holds " + std::to_string(p.a.size()) + " values, expected r*in = " + std::to_string(r * in),
                    {dir.string(), ka, {}});
      if (p.b.size() != static_cast<std::size_t>(out * r))
        throw error("lora_B holds " + std::to_string(p.b.size()) + " values, expected out*r = " + std::to_string(out * r),
                    {dir.string(), kb, {}});
      ts.push_back(f32_tensor(ka, {r, in}, p.a));
      ts.push_back(f32_tensor(kb, {out, r}, p.b));
    }
  write_safetensors(dir / "adapter_model.safetensors", std::move(ts), {{"format", "pt"}});
  write_adapter_config(dir / "adapter_config.json", ad.config);
}

}  // namespace staticgrad::io
