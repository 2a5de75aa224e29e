#pragma once
// The `staticgrad demo` task: a tiny random Qwen2.5-architecture checkpoint
// and a synthetic data set LoRA can learn quickly.
//
// Model: the tiny block shape (hidden 128, intermediate 384, 4 heads, 2 KV
// heads, head dim 32), `layers` layers, vocabulary `vocab`, an untied head
// (tied, the random model would predict the current token again with a
// logit of ~12 and start far above ln(vocab));
// weights ~ N(0, 0.02) (transformers' initializer_range), norms 1, biases 0,
// except the embedding and lm_head ~ N(0, 0.1): LoRA cannot change the head, and
// with rows of norm 0.02 sqrt(128) = 0.23 against a unit-RMS final state the
// largest reachable logit would be ~2.6, too small to ever predict a token
// confidently; rows of norm ~1.1 allow margins of ~12 (the start is then
// ~0.6 above ln(vocab));
// written as F32 model.safetensors + config.json — a checkpoint
// transformers loads like any other.
// Data: each line walks a fixed cycle through `cycle` distinct tokens (a
// seeded random subset of the vocabulary in a random order), starting at a
// random point. The next token is a function of the current one, so the
// achievable loss is ~0 while the random base model starts near log(vocab):
// LoRA first learns which tokens occur (log(vocab) -> log(cycle)), then the
// successor map.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/lora_init.hpp"

namespace staticgrad::train {

struct demo_task {
  std::int64_t layers = 2;
  std::int64_t vocab = 256;
  std::int64_t cycle = 16;    // distinct tokens the data uses
  std::int64_t lines = 256;   // training sequences
  std::int64_t length = 32;   // tokens per sequence
  std::uint64_t seed = 0;
  double head_std = 0.1;      // std of the embedding and lm_head weights (see above)
};

// Independent streams for the weights and the data from one seed.
inline std::uint64_t mix_demo_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline io::hf_config demo_config(const demo_task& d) {
  using S = models::qwen2_tiny;
  io::hf_config c;
  c.hidden_size = S::hidden;
  c.intermediate_size = S::intermediate;
  c.num_hidden_layers = d.layers;
  c.num_attention_heads = S::heads;
  c.num_key_value_heads = S::kv_heads;
  c.head_dim = S::head_dim;
  c.vocab_size = d.vocab;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = false;
  c.dtype = "float32";
  c.max_position_embeddings = 512;
  c.eos_token_ids = {d.vocab - 1};
  return c;
}

// N(0, 1) by Box-Muller on the portable uniform01.
inline double normal01(std::mt19937_64& g) {
  const double u1 = 1.0 - uniform01(g), u2 = uniform01(g);  // u1 in (0, 1]
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * 3.14159265358979323846 * u2);
}

// Writes dir/config.json and dir/model.safetensors (atomic); creates dir.
inline void write_demo_checkpoint(const std::filesystem::path& dir, const demo_task& d) {
  const auto c = demo_config(d);
  std::filesystem::create_directories(dir);
  std::mt19937_64 g(mix_demo_seed(d.seed, 1));
  std::vector<std::vector<float>> store;
  std::vector<io::tensor_data> ts;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, int kind) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = kind == 0 ? float(0.02 * normal01(g)) : kind == 1 ? 1.f : kind == 3 ? float(d.head_std * normal01(g)) : 0.f;
    store.push_back(std::move(v));
    ts.push_back(io::f32_tensor(name, std::move(shape), store.back()));
  };
  store.reserve(std::size_t(4 + 12 * d.layers));
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_dim(), K = c.kv_dim();
  add("model.embed_tokens.weight", {d.vocab, H}, 3);
  add("model.norm.weight", {H}, 1);
  add("lm_head.weight", {d.vocab, H}, 3);
  for (std::int64_t l = 0; l < d.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 1);
    add(p + "post_attention_layernorm.weight", {H}, 1);
    add(p + "self_attn.q_proj.weight", {Q, H}, 0);
    add(p + "self_attn.q_proj.bias", {Q}, 2);
    add(p + "self_attn.k_proj.weight", {K, H}, 0);
    add(p + "self_attn.k_proj.bias", {K}, 2);
    add(p + "self_attn.v_proj.weight", {K, H}, 0);
    add(p + "self_attn.v_proj.bias", {K}, 2);
    add(p + "self_attn.o_proj.weight", {H, Q}, 0);
    add(p + "mlp.gate_proj.weight", {I, H}, 0);
    add(p + "mlp.up_proj.weight", {I, H}, 0);
    add(p + "mlp.down_proj.weight", {H, I}, 0);
  }
  io::write_safetensors(dir / "model.safetensors", std::move(ts), {{"format", "pt"}});
  io::write_hf_config(dir / "config.json", c);
}

// Writes the cycle-walking sequences as pre-tokenized JSONL ({"input_ids": [...]}).
inline void write_demo_data(const std::filesystem::path& file, const demo_task& d) {
  require(d.cycle >= 2 && d.cycle <= d.vocab, "the demo cycle must have 2 .. vocab tokens", {"", "cycle", {}});
  std::mt19937_64 g(mix_demo_seed(d.seed, 2));
  std::vector<std::int32_t> perm(static_cast<std::size_t>(d.vocab));
  std::iota(perm.begin(), perm.end(), 0);
  for (std::size_t i = perm.size() - 1; i > 0; --i) std::swap(perm[i], perm[std::size_t(g() % (i + 1))]);
  std::string text;
  for (std::int64_t n = 0; n < d.lines; ++n) {
    std::int64_t k = std::int64_t(g() % std::uint64_t(d.cycle));
    nlohmann::json ids = nlohmann::json::array();
    for (std::int64_t t = 0; t < d.length; ++t, k = (k + 1) % d.cycle) ids.push_back(perm[std::size_t(k)]);
    text += nlohmann::json{{"input_ids", ids}}.dump() + "\n";
  }
  io::write_text_atomic(file, text);
}

}  // namespace staticgrad::train
