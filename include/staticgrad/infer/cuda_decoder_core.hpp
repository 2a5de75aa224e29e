#pragma once
// The device half of the CUDA decoder (cuda_decoder.hpp): bf16 weights, the
// f32 KV cache and the forward of a feed, behind plain C++ declarations (no
// CUDA or JSON types), so that the host half that reads checkpoints is g++
// code and the nvcc translation unit stays small. The definitions are in
// cuda_decoder_core.cuh: include that in exactly one .cu of a program
// (apps/staticgrad/generate_cuda.cu, tests/gpu/test_cuda_decoder.cu).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "staticgrad/core/dtype.hpp"

namespace staticgrad::infer {

struct cuda_decoder_shape {
  int hidden = 0, intermediate = 0, heads = 0, kv_heads = 0, head_dim = 0, layers = 0, vocab = 0;
  std::int64_t max_positions = 0;
  float rms_norm_eps = 0;
  bool tied = true;    // LM head = embedding
  float lora_scaling = 0;
};

class cuda_decoder_core {
 public:
  // Linear modules of a layer, in io::lora_target order.
  enum module : int { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, num_modules };

  // Throws staticgrad::error without a usable device.
  explicit cuda_decoder_core(const cuda_decoder_shape& s);
  ~cuda_decoder_core();
  cuda_decoder_core(const cuda_decoder_core&) = delete;
  cuda_decoder_core& operator=(const cuda_decoder_core&) = delete;

  // Free device memory in bytes (for the callers' own checks).
  static std::size_t free_device_bytes();

  // Weights, copied to the device (each allocation checked against the free
  // memory; `what` names the tensor in the error).
  void set_embedding(std::span<const bf16> e, const char* what);  // [vocab, hidden]
  void set_lm_head(std::span<const bf16> w, const char* what);    // [vocab, hidden] (untied only)
  void set_final_norm(std::span<const float> w, const char* what);
  void set_norms(int layer, std::span<const float> input, std::span<const float> post, const char* what);
  // W [out, in]; bias [out] or empty. in/out from the module and the shape.
  void set_linear(int layer, module m, std::span<const bf16> w, std::span<const float> bias, const char* what);
  // LoRA A [r, in], B [out, r] of an adapted module.
  void set_lora(int layer, module m, int r, std::span<const bf16> a, std::span<const bf16> b, const char* what);
  void set_inv_freq(std::span<const float> inv_freq);  // [head_dim / 2]

  std::size_t cached() const noexcept;
  std::size_t capacity() const noexcept;
  void reserve(std::size_t positions);  // grows the KV cache (keeps the cached rows)
  void truncate(std::size_t len);
  // Logits of the last id, [vocab] f32 on the host. The ids are range-checked by the caller.
  std::span<const float> feed(std::span<const std::int32_t> ids);

 private:
  struct state;
  std::unique_ptr<state> s_;
};

}  // namespace staticgrad::infer
