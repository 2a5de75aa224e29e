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
  static std::unique_ptr<qwen2_model> load(const std::filesystem::path& dir);

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
  void attach(io::lora_adapter* adapter, io::lora_adapter* grads = nullptr);

  // ---- memory (graph/memory_plan.hpp) ------------------------------------------------
  // What this model keeps for backward: recompute tier and whole-block layers.
  void set_memory(const graph::memory_policy& p);
  const graph::memory_policy& memory() const { return memory_; }
  // Bytes of float arrays a step of T tokens (rank r) holds under policy p:
  // frozen weights, LoRA parameters and gradients, the residual stream and its
  // gradient, saved arenas, the workspace. (Eigen's and the attention's
  // temporaries are not counted.)
  double predict_bytes(std::int64_t T, int r, const graph::memory_policy& p) const;
  // The same, measured: the sizes of the arrays held after the last step().
  double held_bytes(int r) const;
  // The fastest policy whose predicted bytes fit `budget` bytes, for T tokens
  // in sequences of seq_len, rank r (CPU rates: only ratios matter).
  graph::memory_choice plan_memory(std::int64_t T, std::int64_t seq_len, int r, double budget) const;

  // Loss over a batch; with `backward`, accumulates the LoRA gradients of the
  // mean loss into the attached gradient adapter. `seed_scale` replaces the
  // 1/counted of the mean (for a mean over several micro-batches).
  loss_result step(const batch_view& b, bool backward, double seed_scale = 0.0, std::uint64_t dropout_seed = 0);

  // Logits [T, vocab] of the last forward (after step()), for parity checks.
  std::vector<float> logits(std::int64_t T) const;

 private:
  qwen2_model() = default;

  typename block_program::saved_state& saved_of(std::int64_t l) {
    return l < memory_.block_layers ? shared_saved_ : saved_[static_cast<std::size_t>(l - memory_.block_layers)];
  }
  double lora_elems(int r) const;
  void load_weights(const io::checkpoint& ck);
  cpu::parameters<float> layer_params(std::int64_t l);

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

// Where the model of each shape is compiled. Its members of any weight are
// defined out of the class, not inline (qwen2_model_impl.hpp: loading,
// adapter, memory; qwen2_model_step_impl.hpp: step and logits). Header-only
// use includes both and instantiates qwen2_model<S> in every translation unit
// that uses it. The project's own build compiles each shape once (src/cpu:
// the staticgrad_cpu_models library, two generated TUs per shape) and gives
// the targets linking it STATICGRAD_PRECOMPILED_CPU_MODELS, under which these
// declarations keep the model's code out of their TUs (a test or tool with
// several shapes took over a minute; docs/architecture.md "Translation
// units"). Under the macro, a shape outside models::all_shapes has no
// definitions to link.
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

#ifndef STATICGRAD_PRECOMPILED_CPU_MODELS
#include "staticgrad/models/qwen2_model_impl.hpp"
#include "staticgrad/models/qwen2_model_step_impl.hpp"
#endif
