#pragma once
// Qwen2ForCausalLM inference on CUDA with a key/value cache: the device twin
// of kv_decoder.hpp behind the same infer::decoder interface, so generate()
// and `chat` are one loop for both (`staticgrad generate --device cuda`).
// This is the host half (g++): it reads config.json, the checkpoint and the
// adapter and hands them to cuda_decoder_core (the device half, compiled by
// nvcc from cuda_decoder_core.cuh; a program that uses this header links one
// .cu that includes it).
//
//  - shapes from config.json at run time: any Qwen2.5 size loads, no
//    compiled plan is needed;
//  - base weights bf16 on the device (what Qwen2.5 checkpoints store), norm
//    weights, biases and RoPE inverse frequencies f32;
//  - an adapter is applied unmerged, y = x W^T + b + s (x A^T) B^T, as the
//    CPU decoder and PEFT do, with A and B rounded to bf16 (like the CUDA
//    trainer's bf16 copies) and x A^T rounded to bf16 before the second
//    product. Unmerged keeps the base intact and is the CPU path's
//    arithmetic; it costs two thin products per adapted module;
//  - the KV cache is f32 [layer][position][kv_heads * head_dim]; generate()
//    reserves prompt + max_new_tokens (capped at max_position_embeddings)
//    before the prefill, checked against the free device memory;
//  - why not the training plan (model_step.cuh): its attention computes a
//    whole causal sequence and has no cache input.
// tests/gpu/test_cuda_decoder.cu compares it with kv_decoder.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/infer/cuda_decoder_core.hpp"
#include "staticgrad/infer/decoder.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::infer {

class cuda_decoder final : public decoder {
 public:
  // `model_dir`: config.json + safetensors; `adapter_dir`: a PEFT LoRA
  // adapter (empty: none). Throws staticgrad::error: no device, too little
  // device memory, or what the checkpoint and adapter readers reject.
  static std::unique_ptr<cuda_decoder> load(const std::filesystem::path& model_dir,
                                            const std::filesystem::path& adapter_dir = {}) {
    const std::string cfg_file = (model_dir / "config.json").string();
    auto c = io::read_hf_config(model_dir / "config.json");
    check_decoder_config(c, cfg_file);
    std::optional<io::lora_adapter> adapter;
    if (!adapter_dir.empty()) adapter = io::read_peft_adapter(adapter_dir, c);
    cuda_decoder_shape s;
    s.hidden = int(c.hidden_size), s.intermediate = int(c.intermediate_size), s.heads = int(c.num_attention_heads);
    s.kv_heads = int(c.num_key_value_heads), s.head_dim = int(c.head_dim), s.layers = int(c.num_hidden_layers);
    s.vocab = int(c.vocab_size), s.max_positions = c.max_position_embeddings;
    s.rms_norm_eps = float(c.rms_norm_eps), s.tied = c.tie_word_embeddings;
    s.lora_scaling = adapter ? float(adapter->config.scaling()) : 0.0f;
    std::unique_ptr<cuda_decoder> d(new cuda_decoder(c, s));
    const std::uint64_t need = weight_bytes(c), free = cuda_decoder_core::free_device_bytes();
    require(need <= free,
            "--device cuda: the model's bf16 weights need " + std::to_string(need >> 20) + " MiB of device memory, " +
                std::to_string(free >> 20) + " MiB are free",
            {model_dir.string(), "--device", {}});
    d->upload(io::checkpoint::open(model_dir), adapter);
    return d;
  }

  const io::hf_config& config() const noexcept override { return config_; }
  bool has_adapter() const noexcept override { return has_adapter_; }
  std::size_t cached() const noexcept override { return core_.cached(); }
  std::size_t capacity() const noexcept { return core_.capacity(); }
  void reserve(std::size_t positions) override { core_.reserve(positions); }
  void truncate(std::size_t len) override { core_.truncate(len); }

  std::span<const float> feed(std::span<const std::int32_t> ids) override {
    require(!ids.empty(), "nothing to feed");
    for (const auto id : ids)
      require(id >= 0 && id < config_.vocab_size, "token id " + std::to_string(id) + " outside the vocabulary (0.." +
                                                      std::to_string(config_.vocab_size - 1) + ")");
    return core_.feed(ids);
  }

 private:
  cuda_decoder(const io::hf_config& c, const cuda_decoder_shape& s) : config_(c), core_(s) {}

  // Bytes of the bf16 weights (embedding, LM head, every linear), from config.json.
  static std::uint64_t weight_bytes(const io::hf_config& c) {
    std::uint64_t per_layer = 0;
    for (auto t : io::all_lora_targets)
      per_layer += std::uint64_t(io::target_out_features(t, c)) * std::uint64_t(io::target_in_features(t, c));
    const std::uint64_t embed = std::uint64_t(c.vocab_size) * std::uint64_t(c.hidden_size);
    return 2 * (embed * (c.tie_word_embeddings ? 1 : 2) + std::uint64_t(c.num_hidden_layers) * per_layer);
  }

  static std::vector<bf16> to_bf16(const std::vector<float>& f) {
    std::vector<bf16> b(f.size());
    for (std::size_t i = 0; i < f.size(); ++i) b[i] = bf16(f[i]);
    return b;
  }

  void upload(const io::checkpoint& ck, const std::optional<io::lora_adapter>& adapter) {
    const auto& c = config_;
    const std::int64_t H = c.hidden_size, V = c.vocab_size;
    auto tensor = [&](const std::string& name, std::initializer_list<std::int64_t> shape) -> const io::tensor_view& {
      const auto& t = ck.at(name);
      io::require_shape(t, shape);
      return t;
    };
    const std::string embed = "model.embed_tokens.weight";
    core_.set_embedding(io::to_bf16(tensor(embed, {V, H})), embed.c_str());
    core_.set_final_norm(io::to_f32(tensor("model.norm.weight", {H})), "model.norm.weight");
    if (!c.tie_word_embeddings) {
      (void)io::lm_head_weight(ck, false);  // names the missing tensor and why it is needed
      core_.set_lm_head(io::to_bf16(tensor("lm_head.weight", {V, H})), "lm_head.weight");
    }
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const int layer = int(l);
      core_.set_norms(layer, io::to_f32(tensor(p + "input_layernorm.weight", {H})),
                      io::to_f32(tensor(p + "post_attention_layernorm.weight", {H})), (p + "*_layernorm").c_str());
      for (auto t : io::all_lora_targets) {
        const auto m = cuda_decoder_core::module(int(t));
        const std::int64_t out = io::target_out_features(t, c), in = io::target_in_features(t, c);
        const std::string name = p + std::string(io::target_parent(t)) + "." + std::string(io::target_name(t));
        const bool has_bias = t == io::lora_target::q_proj || t == io::lora_target::k_proj || t == io::lora_target::v_proj;
        const auto bias = has_bias ? io::to_f32(tensor(name + ".bias", {out})) : std::vector<float>{};
        core_.set_linear(layer, m, io::to_bf16(tensor(name + ".weight", {out, in})), bias, name.c_str());
        if (adapter && adapter->config.targets(t)) {
          const auto& pr = adapter->at(l, t);
          core_.set_lora(layer, m, int(adapter->config.r), to_bf16(pr.a), to_bf16(pr.b), (name + ".lora_A/B").c_str());
        }
      }
    }
    static_assert(int(io::lora_target::q_proj) == cuda_decoder_core::q_proj &&
                      int(io::lora_target::down_proj) == cuda_decoder_core::down_proj,
                  "cuda_decoder_core's modules are in io::lora_target order");
    core_.set_inv_freq(rope_inv_freq(c));  // f32, as kv_decoder
    has_adapter_ = adapter.has_value();
  }

  io::hf_config config_;
  cuda_decoder_core core_;
  bool has_adapter_ = false;
};

}  // namespace staticgrad::infer
