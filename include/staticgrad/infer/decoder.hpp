#pragma once
// What the generation loop (generate.hpp) needs from a model with a key/value
// cache: feed tokens after the cached positions and get the last one's
// logits. Implemented on the CPU by kv_decoder.hpp (float32, Eigen) and on
// CUDA by cuda_decoder.cuh (bf16 weights, cuBLAS), so `generate` and `chat`
// are one loop for both devices.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/hf_config.hpp"

namespace staticgrad::infer {

class decoder {
 public:
  virtual ~decoder() = default;

  virtual const io::hf_config& config() const noexcept = 0;
  std::int64_t vocab() const noexcept { return config().vocab_size; }
  virtual bool has_adapter() const noexcept = 0;
  // Positions held in the cache (fed and not truncated).
  virtual std::size_t cached() const noexcept = 0;

  // Room for `positions` cached positions in all (a hint: the loop calls it
  // with prompt + max_new_tokens before the prefill, so a device cache is
  // allocated once; feed() past it still works where the decoder can grow).
  virtual void reserve(std::size_t positions) { (void)positions; }

  // Forgets cached positions from `len` on (the start of a new prompt that
  // shares the first `len` tokens with what was fed).
  virtual void truncate(std::size_t len) = 0;

  // Runs `ids` at positions [cached, cached + n), appends their keys and
  // values to the cache and returns the logits of the last of them, [vocab]
  // float32 on the host (valid until the next call).
  virtual std::span<const float> feed(std::span<const std::int32_t> ids) = 0;
};

// What both decoders need of config.json (`file` names it in the error).
inline void check_decoder_config(const io::hf_config& c, const std::string& file) {
  require(c.head_dim % 2 == 0, "head_dim must be even for RoPE", {file, "head_dim", {}});
  require(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
          "num_attention_heads must be a multiple of num_key_value_heads", {file, "num_key_value_heads", {}});
}

// RoPE inverse frequencies [head_dim / 2] in float32, as transformers' default
// init: inv_freq_i = 1 / theta^(2i / d).
inline std::vector<float> rope_inv_freq(const io::hf_config& c) {
  std::vector<float> inv(std::size_t(c.head_dim / 2));
  for (std::size_t i = 0; i < inv.size(); ++i)
    inv[i] = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(c.head_dim));
  return inv;
}

}  // namespace staticgrad::infer
