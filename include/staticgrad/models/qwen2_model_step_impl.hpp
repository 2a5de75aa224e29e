#pragma once
// models::qwen2_model::step and logits: the forward and backward of the
// embedding, block and head programs, the heaviest code of the model
// (compiled per shape in src/cpu's qwen2_model_step_<S>.cpp, apart from the
// rest, qwen2_model_impl.hpp, so that each TU stays under 30 s and 1 GB).
// Not inline for the reason qwen2_model_impl.hpp gives.
#include "staticgrad/models/qwen2_model.hpp"

namespace staticgrad::models {

template <class Shape>
loss_result qwen2_model<Shape>::step(const batch_view& b, bool backward, double seed_scale, std::uint64_t dropout_seed) {
  require(adapter_ != nullptr, "no LoRA adapter attached");
  const std::int64_t T = static_cast<std::int64_t>(b.input_ids.size());
  require(T > 0 && b.layout.tokens() == T, "the batch's layout does not cover its tokens");
  const auto& lc = adapter_->config;
  runtime_config cfg{.eps = float(config_.rms_norm_eps),
                     .rope_theta = float(config_.rope_theta),
                     .lora_scaling = float(lc.scaling()),
                     .lora_dropout = backward ? float(lc.lora_dropout) : 0.0f,
                     .seed = dropout_seed,
                     .layer = 0,
                     .rank = int(lc.r)};
  const std::int64_t L = layers();
  hidden_.resize(static_cast<std::size_t>(L + 1));
  for (auto& h : hidden_) h.assign(static_cast<std::size_t>(T * H), 0.f);
  saved_.resize(static_cast<std::size_t>(L - memory_.block_layers));
  // Embedding.
  embed_.set_batch(T, b.layout, cfg);
  embed_.set_parameters(embed_params_);
  embed_.set_ids("input_ids", b.input_ids.data());
  embed_.set_output("x", hidden_[0].data());
  typename embed_program::saved_state es;
  embed_.forward(es);
  // Blocks.
  block_.set_batch(T, b.layout, cfg);
  for (std::int64_t l = 0; l < L; ++l) {
    cfg.layer = int(l);
    block_.set_batch(T, b.layout, cfg);
    block_.set_parameters(layer_params(l));
    block_.set_input("x", hidden_[l].data());
    block_.set_output("y", hidden_[l + 1].data());
    block_.forward(saved_of(l));
  }
  // Head.
  targets_ = cpu::shift_labels(b.labels.empty() ? b.input_ids : b.labels, b.layout);
  loss_.assign(static_cast<std::size_t>(T), 0.f);
  head_.set_batch(T, b.layout, cfg);
  head_.set_parameters(head_params_);
  head_.set_input("h", hidden_[L].data());
  head_.set_ids("targets", targets_.data());
  head_.set_output("loss", loss_.data());
  head_.forward(head_saved_);
  loss_result res;
  for (std::int64_t t = 0; t < T; ++t)
    if (targets_[t] != cpu::ignore_index) {
      res.loss_sum += loss_[t];
      ++res.counted;
    }
  if (!backward || res.counted == 0) return res;
  // Backward: seed d(loss_t) = scale for counted tokens.
  const double scale = seed_scale > 0 ? seed_scale : 1.0 / double(res.counted);
  dloss_.assign(static_cast<std::size_t>(T), 0.f);
  for (std::int64_t t = 0; t < T; ++t)
    if (targets_[t] != cpu::ignore_index) dloss_[t] = float(scale);
  grad_.assign(static_cast<std::size_t>(T * H), 0.f);
  head_.set_grad("loss", dloss_.data());
  head_.set_grad("h", grad_.data());
  head_.backward(head_saved_);
  for (std::int64_t l = L - 1; l >= 0; --l) {
    cfg.layer = int(l);
    block_.set_batch(T, b.layout, cfg);
    block_.set_parameters(layer_params(l));
    block_.set_input("x", hidden_[l].data());
    block_.set_output("y", hidden_[l + 1].data());
    block_.set_grad("y", grad_.data());
    block_.set_grad("x", grad_.data());  // the residual gradient, updated in place
    // A whole-block recompute layer (memory policy): its forward again, into
    // the shared arena, from its input x_l (y = x_{l+1} is rewritten with
    // the same values: the executor is deterministic).
    if (l < memory_.block_layers) block_.forward(saved_of(l));
    block_.backward(saved_of(l));
  }
  return res;
}

template <class Shape>
std::vector<float> qwen2_model<Shape>::logits(std::int64_t T) const {
  std::vector<float> out(static_cast<std::size_t>(T * vocab()));
  cpu::lm_head_logits<float>(head_.value("hn"), lm_head_, out.data(), T, H, vocab());
  return out;
}

template <class Shape>
cpu::parameters<float> qwen2_model<Shape>::layer_params(std::int64_t l) {
  cpu::parameters<float> p;
  const std::string pre = "model.layers." + std::to_string(l) + ".";
  for (const char* n : {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.bias",
                        "self_attn.k_proj.bias", "self_attn.v_proj.bias"}) {
    auto& w = weights_.at(pre + n);
    p.frozen[n] = {w.data(), 1, std::int64_t(w.size())};
  }
  for (auto t : io::all_lora_targets) {
    const std::string module = std::string(io::target_parent(t)) + "." + std::string(io::target_name(t));
    auto& w = weights_.at(pre + module + ".weight");
    const std::int64_t out = io::target_out_features(t, config_), in = io::target_in_features(t, config_);
    p.frozen[module + ".weight"] = {w.data(), out, in};
    const int r = int(adapter_->config.r);
    if (adapter_->config.targets(t)) {
      auto& pr = adapter_->at(l, t);
      cpu::lora_param<float> lp{pr.a.data(), pr.b.data(), nullptr, nullptr, r};
      if (grads_) {
        lp.dA = grads_->at(l, t).a.data();
        lp.dB = grads_->at(l, t).b.data();
      }
      p.lora[module] = lp;
    } else {
      p.lora[module] = {zeros_.data(), zeros_.data(), nullptr, nullptr, r};  // inactive: exactly zero
    }
  }
  return p;
}

}  // namespace staticgrad::models
