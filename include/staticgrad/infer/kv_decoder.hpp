#pragma once
// Qwen2ForCausalLM inference on the CPU with a key/value cache, for
// `staticgrad generate` and `chat`.
//
//   feed(ids): runs ids at positions [cached, cached + n) through every layer,
//   appends their keys and values to the cache and returns the logits of the
//   last of them ([vocab]). Prefill is one feed of the prompt (matrix-matrix
//   products over its n tokens); each decode step is a feed of one token.
//
// Why not the training plan: the block graph computes a whole causal sequence
// at once (its attention has no cache input), so generating with it would
// recompute every earlier position at each step. The decode forward here is
// the same arithmetic in the same order of operations as transformers'
// Qwen2 eager path in float32: tests/infer/test_kv_decoder.cpp checks it
// against the Hugging Face logits of tests/fixtures/hf (position by position
// through the cache, with and without an adapter) and against the plan-driven
// CPU model (models::qwen2_model), so the two forwards cannot drift apart.
//
// Invariants:
//  - weights are held in float (converted from BF16/F16/F32), shapes from
//    config.json at run time: any Qwen2 size loads, no compiled block shape
//    is needed;
//  - an adapter is applied unmerged, y = x W^T (+ b) + s (x A^T) B^T, as PEFT
//    does; a merged checkpoint is just a model directory;
//  - RoPE angles and inverse frequencies in float32 as transformers computes
//    them (inv_freq_i = 1 / theta^(2i / d), angle = position * inv_freq_i);
//  - the cache holds K after RoPE and V, [layer][position][kv_heads * head_dim];
//  - load(..., bf16_products = true) rounds to bf16 what the CUDA decoder
//    (cuda_decoder.hpp) keeps in bf16: the weights of every product, LoRA A
//    and B, each product's input (and x A^T) and the final normed state; the
//    rest stays f32. It is the CPU baseline of the CUDA decoder's rounding
//    error (tests/gpu/test_cuda_decoder.cu), not a mode for generation.
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/infer/decoder.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::infer {

class kv_decoder final : public decoder {
 public:
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using cmap = Eigen::Map<const matrix>;

  // `model_dir`: config.json + safetensors (a base or a merged checkpoint).
  // `adapter_dir`: a PEFT LoRA adapter to apply unmerged (empty: none).
  // `bf16_products`: the CUDA decoder's bf16 roundings (see above).
  static kv_decoder load(const std::filesystem::path& model_dir, const std::filesystem::path& adapter_dir = {},
                         bool bf16_products = false) {
    kv_decoder d;
    d.bf16_products_ = bf16_products;
    d.config_ = io::read_hf_config(model_dir / "config.json");
    const auto& c = d.config_;
    check_decoder_config(c, (model_dir / "config.json").string());
    const auto ck = io::checkpoint::open(model_dir);
    const std::int64_t H = c.hidden_size, V = c.vocab_size;
    auto take = [&](const std::string& name, std::initializer_list<std::int64_t> shape) {
      const auto& t = ck.at(name);
      io::require_shape(t, shape);
      return io::to_f32(t);
    };
    d.embed_ = take("model.embed_tokens.weight", {V, H});
    d.final_norm_ = take("model.norm.weight", {H});
    if (!c.tie_word_embeddings) {
      (void)io::lm_head_weight(ck, false);  // names the missing tensor and why it is needed
      d.lm_head_ = take("lm_head.weight", {V, H});
    }
    d.layers_.resize(std::size_t(c.num_hidden_layers));
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      auto& L = d.layers_[std::size_t(l)];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      L.norm_in = take(p + "input_layernorm.weight", {H});
      L.norm_post = take(p + "post_attention_layernorm.weight", {H});
      for (auto t : io::all_lora_targets) {
        auto& lin = L.linear[std::size_t(t)];
        const std::int64_t out = io::target_out_features(t, c), in = io::target_in_features(t, c);
        const std::string m = p + std::string(io::target_parent(t)) + "." + std::string(io::target_name(t));
        lin.w = take(m + ".weight", {out, in});
        lin.out = out;
        lin.in = in;
        if (t == io::lora_target::q_proj || t == io::lora_target::k_proj || t == io::lora_target::v_proj)
          lin.b = take(m + ".bias", {out});
      }
    }
    if (!adapter_dir.empty()) {
      d.adapter_ = io::read_peft_adapter(adapter_dir, c);
      d.lora_scaling_ = float(d.adapter_->config.scaling());
    }
    if (bf16_products) d.round_weights_to_bf16();
    d.inv_freq_ = rope_inv_freq(c);  // float32, as transformers' default RoPE init
    d.k_cache_.resize(d.layers_.size());
    d.v_cache_.resize(d.layers_.size());
    return d;
  }

  const io::hf_config& config() const noexcept override { return config_; }
  bool has_adapter() const noexcept override { return adapter_.has_value(); }
  std::size_t cached() const noexcept override { return cached_; }

  // decoder::truncate.
  void truncate(std::size_t len) override {
    cached_ = std::min(cached_, len);
    const auto kv = std::size_t(config_.kv_dim());
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      k_cache_[l].resize(cached_ * kv);
      v_cache_[l].resize(cached_ * kv);
    }
  }

  // decoder::feed: the logits of the last of `ids`, [vocab].
  std::span<const float> feed(std::span<const std::int32_t> ids) override {
    const auto& c = config_;
    const std::int64_t T = std::int64_t(ids.size()), H = c.hidden_size;
    require(T > 0, "nothing to feed");
    require(std::int64_t(cached_) + T <= c.max_position_embeddings,
            "the sequence would exceed max_position_embeddings (" + std::to_string(c.max_position_embeddings) + ")");
    matrix x(T, H);
    for (std::int64_t t = 0; t < T; ++t) {
      const auto id = ids[std::size_t(t)];
      require(id >= 0 && id < c.vocab_size, "token id " + std::to_string(id) + " outside the vocabulary (0.." +
                                                std::to_string(c.vocab_size - 1) + ")");
      x.row(t) = cmap(embed_.data() + std::int64_t(id) * H, 1, H);
    }
    for (std::size_t l = 0; l < layers_.size(); ++l) layer_forward(l, x);
    cached_ += std::size_t(T);
    // Only the last position's logits are needed to pick the next token.
    Eigen::RowVectorXf h = x.row(T - 1);
    rmsnorm(h.data(), final_norm_.data(), H);
    if (bf16_products_) h = h.unaryExpr(&round_bf16);
    const float* head = c.tie_word_embeddings ? embed_.data() : lm_head_.data();
    logits_.resize(std::size_t(c.vocab_size));
    Eigen::Map<Eigen::VectorXf>(logits_.data(), c.vocab_size).noalias() = cmap(head, c.vocab_size, H) * h.transpose();
    return logits_;
  }

 private:
  struct linear_w {
    std::vector<float> w, b;  // [out, in], [out] or empty
    std::int64_t out = 0, in = 0;
  };
  struct layer_w {
    std::vector<float> norm_in, norm_post;
    std::array<linear_w, io::num_lora_targets> linear;
  };

  // Qwen2RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * weight.
  void rmsnorm(float* x, const float* w, std::int64_t n) const {
    float ss = 0;
    for (std::int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float r = 1.0f / std::sqrt(ss / float(n) + float(config_.rms_norm_eps));
    for (std::int64_t i = 0; i < n; ++i) x[i] = w[i] * (x[i] * r);
  }

  // y = x W^T (+ b) (+ s (x A^T) B^T for an adapted module of layer l).
  matrix linear(std::size_t l, io::lora_target t, const matrix& x_in) const {
    const auto& lin = layers_[l].linear[std::size_t(t)];
    matrix rounded;  // only with bf16_products (no copy otherwise)
    if (bf16_products_) rounded = x_in.unaryExpr(&round_bf16);
    const matrix& x = bf16_products_ ? rounded : x_in;
    matrix y = x * cmap(lin.w.data(), lin.out, lin.in).transpose();
    if (!lin.b.empty()) y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(lin.b.data(), lin.out);
    if (adapter_ && adapter_->config.targets(t)) {
      const auto& p = adapter_->at(std::int64_t(l), t);
      const std::int64_t r = adapter_->config.r;
      matrix xa = x * cmap(p.a.data(), r, lin.in).transpose();
      if (bf16_products_) xa = xa.unaryExpr(&round_bf16);
      y.noalias() += lora_scaling_ * (xa * cmap(p.b.data(), lin.out, r).transpose());
    }
    return y;
  }

  // Rotates the head_dim-wide groups of `m` ([T, heads * head_dim]) for
  // positions cached_ + t: x * cos + rotate_half(x) * sin.
  void rope(matrix& m, std::int64_t heads) const {
    const std::int64_t d = config_.head_dim, half = d / 2;
    for (std::int64_t t = 0; t < m.rows(); ++t) {
      const float pos = float(std::int64_t(cached_) + t);
      for (std::int64_t i = 0; i < half; ++i) {
        const float ang = pos * inv_freq_[std::size_t(i)];
        const float cs = std::cos(ang), sn = std::sin(ang);
        for (std::int64_t h = 0; h < heads; ++h) {
          float* v = m.data() + t * m.cols() + h * d;
          const float a = v[i], b = v[i + half];
          v[i] = a * cs - b * sn;
          v[i + half] = b * cs + a * sn;
        }
      }
    }
  }

  void layer_forward(std::size_t l, matrix& x) {
    using io::lora_target;
    const auto& c = config_;
    const auto& L = layers_[l];
    const std::int64_t T = x.rows(), H = c.hidden_size, d = c.head_dim, nh = c.num_attention_heads,
                       nkv = c.num_key_value_heads, KV = c.kv_dim();
    matrix h = x;
    for (std::int64_t t = 0; t < T; ++t) rmsnorm(h.data() + t * H, L.norm_in.data(), H);
    matrix q = linear(l, lora_target::q_proj, h), k = linear(l, lora_target::k_proj, h),
           v = linear(l, lora_target::v_proj, h);
    rope(q, nh);
    rope(k, nkv);
    auto& kc = k_cache_[l];
    auto& vc = v_cache_[l];
    kc.insert(kc.end(), k.data(), k.data() + T * KV);
    vc.insert(vc.end(), v.data(), v.data() + T * KV);
    const std::int64_t S = std::int64_t(cached_) + T;  // keys visible to the last new token
    const cmap K(kc.data(), S, KV), Vm(vc.data(), S, KV);
    const float scale = 1.0f / std::sqrt(float(d));
    matrix attn(T, nh * d);
    Eigen::VectorXf p(S);
    for (std::int64_t hd = 0; hd < nh; ++hd) {
      const std::int64_t g = hd / (nh / nkv);  // the KV head this query head shares
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t n = std::int64_t(cached_) + t + 1;  // causal: keys 0..cached_+t
        const Eigen::Map<const Eigen::RowVectorXf> qt(q.data() + t * nh * d + hd * d, d);
        for (std::int64_t j = 0; j < n; ++j)
          p[j] = qt.dot(Eigen::Map<const Eigen::RowVectorXf>(K.data() + j * KV + g * d, d)) * scale;
        const float mx = p.head(n).maxCoeff();
        float sum = 0;
        for (std::int64_t j = 0; j < n; ++j) sum += (p[j] = std::exp(p[j] - mx));
        Eigen::Map<Eigen::RowVectorXf> o(attn.data() + t * nh * d + hd * d, d);
        o.setZero();
        for (std::int64_t j = 0; j < n; ++j)
          o += (p[j] / sum) * Eigen::Map<const Eigen::RowVectorXf>(Vm.data() + j * KV + g * d, d);
      }
    }
    x += linear(l, lora_target::o_proj, attn);
    h = x;
    for (std::int64_t t = 0; t < T; ++t) rmsnorm(h.data() + t * H, L.norm_post.data(), H);
    matrix gate = linear(l, lora_target::gate_proj, h);
    const matrix up = linear(l, lora_target::up_proj, h);
    gate = (gate.array() / (1.0f + (-gate.array()).exp()) * up.array()).matrix();  // silu(gate) * up
    x += linear(l, lora_target::down_proj, gate);
  }

  kv_decoder() = default;

  static float round_bf16(float f) { return float(bf16(f)); }
  void round_weights_to_bf16() {
    auto round = [](std::vector<float>& v) {
      for (auto& f : v) f = round_bf16(f);
    };
    round(embed_), round(lm_head_);
    for (auto& L : layers_)
      for (auto& lin : L.linear) round(lin.w);
    if (adapter_)
      for (auto& layer : adapter_->layers)
        for (auto& pr : layer) round(pr.a), round(pr.b);
  }

  io::hf_config config_;
  std::vector<float> embed_, final_norm_, lm_head_;
  std::vector<layer_w> layers_;
  std::optional<io::lora_adapter> adapter_;
  float lora_scaling_ = 0;
  std::vector<float> inv_freq_;
  std::vector<std::vector<float>> k_cache_, v_cache_;
  std::size_t cached_ = 0;
  std::vector<float> logits_;
  bool bf16_products_ = false;
};

}  // namespace staticgrad::infer
