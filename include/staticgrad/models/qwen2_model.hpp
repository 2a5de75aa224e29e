#pragma once
// Qwen2ForCausalLM with LoRA on the CPU backend:
//   x_0 = embed(input_ids);  x_{l+1} = block_l(x_l);  loss = CE(norm(x_L) W_lm^T, shifted labels)
// The block is the one static graph (qwen2_block.hpp) applied to each layer's
// weights; the embedding and the head are graphs too (below), run by the
// same executor. Forward keeps each layer's input x_l (the residual stream,
// the block's external saved value) and its saved arena; backward runs the
// head's, then each block's backward, updating one residual-gradient buffer
// in place (the plan aliases d(x) to d(y)).
//
// Invariants:
//   * weights are stored in float (converted from the checkpoint's bf16/f16/f32);
//   * LoRA parameters are the io::lora_adapter (f32, PEFT layout); modules the
//     adapter does not target are bound as zero adapters without gradients,
//     which is exact (their contribution is 0) and lets one compiled plan serve
//     every subset of targets;
//   * the loss is the mean token cross-entropy over all counted tokens of the
//     batch (labels shifted inside each sequence, -100 ignored).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/cross_entropy.hpp"
#include "staticgrad/backend/cpu/executor.hpp"
#include "staticgrad/graph/memory_plan.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors.hpp"
#include "staticgrad/models/qwen2.hpp"

namespace staticgrad::models {

template <int H>
using qwen2_embedding_graph =
    dsl::graph<dsl::out<"x", dsl::embedding<dsl::token_ids<"input_ids">, dsl::frozen_rows<"model.embed_tokens.weight", H>>>>;

template <int H>
using qwen2_head_graph =
    dsl::graph<dsl::let<"hn", dsl::rmsnorm<dsl::in<"h", H>, dsl::vec<"model.norm.weight", H>>>,
               dsl::out<"loss", dsl::lm_head_cross_entropy<dsl::ref<"hn">, dsl::frozen_rows<"lm_head.weight", H>,
                                                           dsl::token_ids<"targets">>>>;

// One batch: tokens of packed sequences, HF-aligned labels (shifted inside).
struct batch_view {
  std::span<const std::int32_t> input_ids;  // [T]
  std::span<const std::int32_t> labels;     // [T], -100 = ignored; empty = input_ids
  cpu::token_layout layout;                 // sequences and positions
};

struct loss_result {
  double loss_sum = 0;        // sum of token cross-entropies
  std::int64_t counted = 0;   // tokens counted
  double mean() const { return counted ? loss_sum / double(counted) : 0.0; }
};

template <class Shape>
class qwen2_model {
 public:
  static constexpr int H = Shape::hidden;
  using block_program = cpu::program<qwen2_block<Shape>, float>;
  using head_program = cpu::program<qwen2_head_graph<H>, float>;
  using embed_program = cpu::program<qwen2_embedding_graph<H>, float>;

  // Loads the frozen weights of `dir` (config.json + safetensors).
  static std::unique_ptr<qwen2_model> load(const std::filesystem::path& dir) {
    auto m = std::unique_ptr<qwen2_model>(new qwen2_model());
    m->config_ = io::read_hf_config(dir / "config.json");
    require(shape_matches<Shape>(m->config_), "config does not match the compiled block shape " + shape_text<Shape>(),
            {(dir / "config.json").string(), "", std::nullopt});
    const auto ck = io::checkpoint::open(dir);
    m->load_weights(ck);
    return m;
  }

  const io::hf_config& config() const { return config_; }
  std::int64_t layers() const { return config_.num_hidden_layers; }
  std::int64_t vocab() const { return config_.vocab_size; }

  // The frozen weights by their checkpoint names (float), for merge and tests.
  const std::vector<float>& weight(const std::string& name) const { return weights_.at(name); }
  std::vector<std::string> weight_names() const {
    std::vector<std::string> v;
    for (auto& [k, _] : weights_) v.push_back(k);
    return v;
  }

  // Attaches the adapter (not owned; must outlive the calls). Gradients, if
  // wanted, go to `grads` (same shapes as the adapter; accumulated).
  void attach(io::lora_adapter* adapter, io::lora_adapter* grads = nullptr) {
    adapter_ = adapter;
    grads_ = grads;
    require(adapter->num_layers == layers(), "the adapter has " + std::to_string(adapter->num_layers) +
                                                 " layers, the model " + std::to_string(layers()));
    const auto r = adapter->config.r;
    zeros_.assign(static_cast<std::size_t>(r * std::max<std::int64_t>(config_.intermediate_size, config_.q_dim()) * 2), 0.f);
  }

  // ---- memory (graph/memory_plan.hpp) ------------------------------------------------
  // What this model keeps for backward: recompute tier and whole-block layers.
  void set_memory(const graph::memory_policy& p) {
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
  const graph::memory_policy& memory() const { return memory_; }
  // Bytes of float arrays a step of T tokens (rank r) holds under policy p:
  // frozen weights, LoRA parameters and gradients, the residual stream and its
  // gradient, saved arenas, the workspace. (Eigen's and the attention's
  // temporaries are not counted.)
  double predict_bytes(std::int64_t T, int r, const graph::memory_policy& p) const {
    constexpr auto& BS = block_program::sched;
    constexpr auto& HS = head_program::sched;
    double e = weight_elems_ + 2.0 * lora_elems(r);
    e += double(layers() + 2) * T * H + 3.0 * T;  // x_0..x_L, the residual gradient; loss, dloss, targets
    e += T * graph::saved_bytes_per_token(BS, r, int(layers()), p, 1, 1);
    e += double(T) * (BS.workspace_width + HS.workspace_width + HS.saved_act_width + HS.saved_stat_width);
    return e * sizeof(float);
  }
  // The same, measured: the sizes of the arrays held after the last step().
  double held_bytes(int r) const {
    double e = weight_elems_ + 2.0 * lora_elems(r) + double(grad_.size() + loss_.size() + dloss_.size() + targets_.size());
    for (const auto& h : hidden_) e += double(h.size());
    for (const auto& sv : saved_) e += double(sv.act.size() + sv.stat.size() + sv.rank.size());
    e += double(shared_saved_.act.size() + shared_saved_.stat.size() + shared_saved_.rank.size());
    e += double(block_.held_elems() + head_.held_elems() + head_saved_.act.size() + head_saved_.stat.size());
    return e * sizeof(float);
  }
  // The fastest policy whose predicted bytes fit `budget` bytes, for T tokens
  // in sequences of seq_len, rank r (CPU rates: only ratios matter).
  graph::memory_choice plan_memory(std::int64_t T, std::int64_t seq_len, int r, double budget) const {
    const graph::device_rates cpu{.gemm_flops = 5e10, .attention_flops = 2e10, .bytes = 1e10};
    const auto c = graph::layer_costs(block_program::sched, double(T), double(seq_len), r, cpu, 4, 4);
    return graph::plan_memory(
        block_program::recompute_tiers(), int(layers()), budget,
        [&](const graph::memory_policy& p) { return predict_bytes(T, r, p); },
        [&](const graph::memory_policy& p) { return graph::step_seconds(c, int(layers()), p); });
  }

  // Loss over a batch; with `backward`, accumulates the LoRA gradients of the
  // mean loss into the attached gradient adapter. `seed_scale` replaces the
  // 1/counted of the mean (for a mean over several micro-batches).
  loss_result step(const batch_view& b, bool backward, double seed_scale = 0.0, std::uint64_t dropout_seed = 0) {
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

  // Logits [T, vocab] of the last forward (after step()), for parity checks.
  std::vector<float> logits(std::int64_t T) const {
    std::vector<float> out(static_cast<std::size_t>(T * vocab()));
    cpu::lm_head_logits<float>(head_.value("hn"), lm_head_, out.data(), T, H, vocab());
    return out;
  }

 private:
  qwen2_model() = default;

  typename block_program::saved_state& saved_of(std::int64_t l) {
    return l < memory_.block_layers ? shared_saved_ : saved_[static_cast<std::size_t>(l - memory_.block_layers)];
  }
  double lora_elems(int r) const {
    double e = 0;
    for (auto t : io::all_lora_targets)
      e += double(r) * double(io::target_in_features(t, config_) + io::target_out_features(t, config_));
    return e * double(layers());
  }

  void load_weights(const io::checkpoint& ck) {
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

  cpu::parameters<float> layer_params(std::int64_t l) {
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

  io::hf_config config_;
  std::map<std::string, std::vector<float>> weights_;
  const float* lm_head_ = nullptr;
  io::lora_adapter* adapter_ = nullptr;
  io::lora_adapter* grads_ = nullptr;
  std::vector<float> zeros_;
  cpu::parameters<float> embed_params_, head_params_;
  embed_program embed_;
  block_program block_;
  head_program head_;
  std::vector<std::vector<float>> hidden_;
  std::vector<typename block_program::saved_state> saved_;  // layers block_layers .. L-1
  typename block_program::saved_state shared_saved_;       // the whole-block recompute layers'
  graph::memory_policy memory_{};
  double weight_elems_ = 0;
  typename head_program::saved_state head_saved_;
  std::vector<std::int32_t> targets_;
  std::vector<float> loss_, dloss_, grad_;
};

// Where the model of each shape is compiled. Header-only use instantiates
// qwen2_model<S> in every translation unit that uses it. The project's own
// build compiles each shape once (src/cpu: the staticgrad_cpu_models library,
// one generated TU per shape) and gives the targets linking it
// STATICGRAD_PRECOMPILED_CPU_MODELS, under which these declarations keep the
// model's code out of their TUs (a test or tool with several shapes took over
// a minute; docs/architecture.md "Translation units").
#ifdef STATICGRAD_PRECOMPILED_CPU_MODELS
static_assert(shape_count(all_shapes{}) == 8,
              "qwen2_model.hpp: one extern template line per shape of models::all_shapes (and src/cpu/CMakeLists.txt)");
extern template class qwen2_model<qwen2_tiny>;
extern template class qwen2_model<qwen2_5_0_5b>;
extern template class qwen2_model<qwen2_5_1_5b>;
extern template class qwen2_model<qwen2_5_3b>;
extern template class qwen2_model<qwen2_5_7b>;
extern template class qwen2_model<qwen2_5_14b>;
extern template class qwen2_model<qwen2_5_32b>;
extern template class qwen2_model<qwen2_5_72b>;
#endif

}  // namespace staticgrad::models
