#pragma once
// models::qwen2_model's loading, adapter and memory members: everything but
// the step (qwen2_model_step_impl.hpp). Out of the class body so that they
// are not inline: under STATICGRAD_PRECOMPILED_CPU_MODELS (qwen2_model.hpp)
// `extern template` keeps them out of the TUs that use the model, which an
// inline member would not (g++ instantiates inline members for inlining
// despite extern template). Compiled per shape in src/cpu's
// qwen2_model_<S>.cpp; header-only use gets them through qwen2_model.hpp.
#include "staticgrad/models/qwen2_model.hpp"

namespace staticgrad::models {

template <class Shape>
std::unique_ptr<qwen2_model<Shape>> qwen2_model<Shape>::load(const std::filesystem::path& dir) {
  auto m = std::unique_ptr<qwen2_model>(new qwen2_model());
  m->config_ = io::read_hf_config(dir / "config.json");
  require(shape_matches<Shape>(m->config_), "config does not match the compiled block shape " + shape_text<Shape>(),
          {(dir / "config.json").string(), "", std::nullopt});
  const auto ck = io::checkpoint::open(dir);
  m->load_weights(ck);
  return m;
}

template <class Shape>
void qwen2_model<Shape>::attach(io::lora_adapter* adapter, io::lora_adapter* grads) {
  adapter_ = adapter;
  grads_ = grads;
  require(adapter->num_layers == layers(), "the adapter has " + std::to_string(adapter->num_layers) +
                                               " layers, the model " + std::to_string(layers()));
  const auto r = adapter->config.r;
  zeros_.assign(static_cast<std::size_t>(r * std::max<std::int64_t>(config_.intermediate_size, config_.q_dim()) * 2), 0.f);
}

template <class Shape>
void qwen2_model<Shape>::set_memory(const graph::memory_policy& p) {
  require(p.tier >= 0 && p.tier <= block_program::recompute_tiers() && p.block_layers >= 0 &&
              p.block_layers <= layers(),
          "memory policy: tier " + std::to_string(p.tier) + " or block layers " + std::to_string(p.block_layers) +
              " out of range (tiers 0.." + std::to_string(block_program::recompute_tiers()) + ", layers 0.." +
              std::to_string(layers()) + ")");
  require(p.offload_layers == 0, "memory policy: offloading layer inputs is a CUDA plan decision (the CPU's "
                                 "residual stream is host memory already)");
  memory_ = p;
  block_.set_recompute_tier(p.tier);
  saved_.clear();  // re-sized for the policy by the next forward
  shared_saved_ = {};
}

template <class Shape>
double qwen2_model<Shape>::predict_bytes(std::int64_t T, int r, const graph::memory_policy& p) const {
  constexpr auto& BS = block_program::sched;
  constexpr auto& HS = head_program::sched;
  double e = weight_elems_ + 2.0 * lora_elems(r);
  e += double(layers() + 2) * T * H + 3.0 * T;  // x_0..x_L, the residual gradient; loss, dloss, targets
  e += T * graph::saved_bytes_per_token(BS, r, int(layers()), p, 1, 1);
  e += double(T) * (BS.workspace_width + HS.workspace_width + HS.saved_act_width + HS.saved_stat_width);
  return e * sizeof(float);
}

template <class Shape>
double qwen2_model<Shape>::held_bytes(int r) const {
  double e = weight_elems_ + 2.0 * lora_elems(r) + double(grad_.size() + loss_.size() + dloss_.size() + targets_.size());
  for (const auto& h : hidden_) e += double(h.size());
  for (const auto& sv : saved_) e += double(sv.act.size() + sv.stat.size() + sv.rank.size());
  e += double(shared_saved_.act.size() + shared_saved_.stat.size() + shared_saved_.rank.size());
  e += double(block_.held_elems() + head_.held_elems() + head_saved_.act.size() + head_saved_.stat.size());
  return e * sizeof(float);
}

template <class Shape>
graph::memory_choice qwen2_model<Shape>::plan_memory(std::int64_t T, std::int64_t seq_len, int r, double budget) const {
  const graph::device_rates cpu{.gemm_flops = 5e10, .attention_flops = 2e10, .bytes = 1e10};
  const auto c = graph::layer_costs(block_program::sched, double(T), double(seq_len), r, cpu, 4, 4);
  return graph::plan_memory(
      block_program::recompute_tiers(), int(layers()), budget,
      [&](const graph::memory_policy& p) { return predict_bytes(T, r, p); },
      [&](const graph::memory_policy& p) { return graph::step_seconds(c, int(layers()), p); });
}

template <class Shape>
double qwen2_model<Shape>::lora_elems(int r) const {
  double e = 0;
  for (auto t : io::all_lora_targets)
    e += double(r) * double(io::target_in_features(t, config_) + io::target_out_features(t, config_));
  return e * double(layers());
}

template <class Shape>
void qwen2_model<Shape>::load_weights(const io::checkpoint& ck) {
  const std::string file = ck.source();
  auto take = [&](const std::string& name, std::initializer_list<std::int64_t> shape) {
    const auto& t = ck.at(name);
    io::require_shape(t, shape);
    weights_[name] = io::to_f32(t);
  };
  const std::int64_t V = vocab(), I = Shape::intermediate, QW = Shape::q_width, KW = Shape::kv_width;
  take("model.embed_tokens.weight", {V, H});
  take("model.norm.weight", {H});
  if (ck.contains("lm_head.weight")) take("lm_head.weight", {V, H});
  else
    require(config_.tie_word_embeddings, "the checkpoint has no lm_head.weight and tie_word_embeddings is false",
            {file, "lm_head.weight", std::nullopt});
  lm_head_ = weights_.count("lm_head.weight") ? weights_["lm_head.weight"].data() : weights_["model.embed_tokens.weight"].data();
  for (std::int64_t l = 0; l < layers(); ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    take(p + "input_layernorm.weight", {H});
    take(p + "post_attention_layernorm.weight", {H});
    take(p + "self_attn.q_proj.weight", {QW, H});
    take(p + "self_attn.q_proj.bias", {QW});
    take(p + "self_attn.k_proj.weight", {KW, H});
    take(p + "self_attn.k_proj.bias", {KW});
    take(p + "self_attn.v_proj.weight", {KW, H});
    take(p + "self_attn.v_proj.bias", {KW});
    take(p + "self_attn.o_proj.weight", {H, QW});
    take(p + "mlp.gate_proj.weight", {I, H});
    take(p + "mlp.up_proj.weight", {I, H});
    take(p + "mlp.down_proj.weight", {H, I});
  }
  for (const auto& [k, w] : weights_) weight_elems_ += double(w.size());
  embed_params_.frozen["model.embed_tokens.weight"] = {weights_["model.embed_tokens.weight"].data(), V, H};
  head_params_.frozen["model.norm.weight"] = {weights_["model.norm.weight"].data(), 1, H};
  head_params_.frozen["lm_head.weight"] = {lm_head_, V, H};
}

}  // namespace staticgrad::models
