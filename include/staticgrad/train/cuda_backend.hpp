#pragma once
// One cuda::model_step<Plan> (backend/cuda/model_step.cuh) behind the
// training loop's backend interface (backend.hpp): the host half, plain C++
// (g++; nvcc also compiles it). The model step is reached through
// train::cuda_model (cuda_model.hpp); cuda_backend.cuh makes one for a plan:
//   train::cuda_backend b(train::cuda_model_plan_of<cuda::plans::qwen2_7b::model>(), dir, lora, optim, T);
//
//   memory_request (--memory-budget, default free device memory less 1 GiB)
//     --model_step::choose_memory--> model_options::memory (memory_plan(): the line finetune prints)
//   checkpoint (config.json + safetensors, bf16/f16/f32) --to_bf16--> device weights
//   token_batch (kept segments) --pad to T = rows * max_len (one extra segment of id 0,
//     labels -100)--> model_step::set_batch
//   train_step: one micro-batch: model_step::step (one CUDA graph: forward, backward, AdamW);
//               several: zero_grads, forward_backward(seed_scale, accumulate) each, optimizer_step
//   data-parallel (step_inputs::comm): the accumulation path for every step; on
//               the last micro-batch, right after layer l's backward, layer l's
//               contiguous slice of the flat gradient array is all-reduced on
//               the communicator's stream (overlapping the backward of layers
//               l-1 .. 0); AdamW waits for that stream (docs/multi_gpu.md)
//   eval_loss_sum: set_batch + forward_loss (forward only: the chunked head's loss, no
//               backward, no dropout; gradients and optimizer state untouched)
//   adapter / optimizer in and out: the flat f32 arrays (p, m, v) <-> io::lora_adapter
//
// Differences from the CPU backend (docs/cuda.md "finetune on the GPU"):
//  - static shapes: every batch is padded to T tokens. Attention never crosses
//    a segment and the padding's targets are all ignored, so it adds nothing
//    to the loss or to any gradient; it only costs compute;
//  - the CUDA model carries adapters on all seven projections. Untargeted
//    modules are held at A = B = 0, which keeps them exactly 0: dA = s (dY B)^T X
//    vanishes with B = 0 and dB = s dY^T (X A^T) with A = 0, so AdamW sees
//    g = 0, m = v = 0, update 0 / (0 + eps) = 0. adapter() checks they are still 0;
//  - LoRA dropout: the CPU model's mask (ops/lora_dropout.hpp) for each
//    micro-batch's step_inputs::dropout_seed, through model_step::set_dropout;
//  - bf16 weights and activations: losses within ~1e-3 relative of the CPU's, not bit for bit.
//  - no fmt here or in what it includes: nvcc's host pass rejects fmt 9.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/core/dtype.hpp"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/backend.hpp"
#include "staticgrad/train/cuda_model.hpp"
#include "staticgrad/train/distributed.hpp"

namespace staticgrad::train {

class cuda_backend final : public backend {
 public:
  // plan: the plan's model step (cuda_model_plan_of<Plan>(), cuda_backend.cuh).
  // tokens: T, the static token count of every batch (rows * max_len).
  // mem: the memory budget (0: the free device memory less 1 GiB) and the row
  // length; model_step::choose_memory picks what is kept before anything is allocated.
  cuda_backend(const cuda_model_plan& plan, const std::filesystem::path& model_dir, const io::lora_config& lora,
               const adamw_options& optim, std::int64_t tokens, const memory_request& mem = {})
      : plan_(plan), lora_(lora), T_(tokens) {
    cfg_ = io::read_hf_config(model_dir);
    const std::string cfg_file = (model_dir / "config.json").string();
    require(models::shape_matches(plan_.sizes(), cfg_),
            "the checkpoint's block shape does not match the CUDA plan " + plan_.name() + " " + plan_.shape_text(),
            {cfg_file, "", {}});
    require(cfg_.num_hidden_layers >= 1, "num_hidden_layers must be positive", {cfg_file, "num_hidden_layers", {}});
    cuda::model_options mo;
    mo.layers = static_cast<int>(cfg_.num_hidden_layers);
    mo.vocab = cfg_.vocab_size;
    mo.tied = cfg_.tie_word_embeddings;
    mo.rank = static_cast<int>(lora.r);
    mo.lora_scaling = static_cast<float>(lora.scaling());
    mo.eps = static_cast<float>(cfg_.rms_norm_eps);
    mo.rope_theta = static_cast<float>(cfg_.rope_theta);
    mo.lora_dropout = static_cast<float>(lora.lora_dropout);
    choose_memory(mo, mem);
    model_ = plan_.make(T_, mo);
    load_weights(model_dir);
    hp_.lr = optim.lr, hp_.beta1 = optim.beta1, hp_.beta2 = optim.beta2, hp_.eps = optim.eps;
    hp_.weight_decay = optim.weight_decay, hp_.max_grad_norm = optim.max_grad_norm;
    upload_flat(model_->lora_params(), io::make_lora_adapter(lora, cfg_));
    model_->sync_lora_bf16(true);  // also zeroes AdamW's m, v (fresh device memory is not)
    model_->synchronize();
    layer_gradient_buckets();
  }

  cuda_model& model() { return *model_; }
  const io::hf_config& config() const override { return cfg_; }
  backend_features features() const override { return {"cuda", true}; }
  std::int64_t max_batch_tokens() const override { return T_; }

  void set_adapter(const io::lora_adapter& a) override {
    upload_flat(model_->lora_params(), a);
    model_->sync_lora_bf16(false);
    model_->synchronize();
  }
  io::lora_adapter adapter() override { return download_flat(model_->lora_params(), "value"); }

  void set_optimizer(const optimizer_state& s) override {
    upload_flat(model_->adam_m(), s.m);
    upload_flat(model_->adam_v(), s.v);
    model_->set_adam_steps(s.steps);
    model_->synchronize();
  }
  optimizer_state optimizer() override {
    return {model_->adam_steps(), download_flat(model_->adam_m(), "exp_avg"), download_flat(model_->adam_v(), "exp_avg_sq")};
  }

  step_outputs train_step(const step_inputs& in) override {
    step_outputs out;
    const float p = static_cast<float>(lora_.lora_dropout);
    if (in.micro.size() == 1 && !in.comm) {
      upload_batch(in.micro[0]);
      model_->set_dropout(p, in.dropout_seed[0]);
      out.loss_sum = model_->step(hp_, in.lr) * static_cast<double>(model_->counted());  // one CUDA graph
    } else {
      model_->zero_grads();
      for (std::size_t m = 0; m < in.micro.size(); ++m) {
        upload_batch(in.micro[m]);
        model_->set_dropout(p, in.dropout_seed[m]);
        hook_scope reduce(*model_, in.comm && m + 1 == in.micro.size() ? reducer(*in.comm) : nullptr);
        out.loss_sum += model_->forward_backward(in.seed_scale, true).loss_sum;
      }
      if (in.comm) in.comm->device_wait(model_->stream());  // every bucket summed before clipping + AdamW
      model_->optimizer_step(hp_, in.lr);
    }
    out.grad_norm = model_->last_grad_norm();
    return out;
  }

  double eval_loss_sum(const token_batch& b) override {
    upload_batch(b);
    return model_->forward_loss().loss_sum;
  }

  std::string first_non_finite() override {
    // Unchecked downloads: a NaN spreads into the untargeted slots too (0 * NaN), which must not hide the report.
    return describe_first_non_finite(download_flat(model_->lora_grads(), "gradient", false),
                                     download_flat(model_->lora_params(), "value", false));
  }
  std::uint64_t memory_bytes() override { return model_->allocated_bytes(); }
  std::string memory_plan() const override { return memory_plan_; }

 private:
  // ---- data-parallel: one gradient bucket per layer ----------------------------------
  // The flat arrays are layer-major (model_step: per layer, per slot, A then
  // B): layer l's gradients are elements [bucket_[l], bucket_[l + 1]).
  void layer_gradient_buckets() {
    const int L = static_cast<int>(cfg_.num_hidden_layers);
    bucket_.assign(static_cast<std::size_t>(L) + 1, model_->lora_elems());
    for (auto it = model_->lora_slots().rbegin(); it != model_->lora_slots().rend(); ++it)
      bucket_[static_cast<std::size_t>(it->layer)] = std::min({bucket_[static_cast<std::size_t>(it->layer)], it->a_off, it->b_off});
    for (const auto& sl : model_->lora_slots())
      require(sl.a_off >= bucket_[static_cast<std::size_t>(sl.layer)] &&
                  sl.b_off < bucket_[static_cast<std::size_t>(sl.layer) + 1],
              "the CUDA model's LoRA arrays are not laid out layer by layer (needed for the gradient buckets)");
  }
  std::function<void(int)> reducer(communicator& comm) {
    return [this, &comm](int l) {
      const std::size_t b = bucket_[static_cast<std::size_t>(l)], e = bucket_[static_cast<std::size_t>(l) + 1];
      comm.all_reduce_device(model_->lora_grads() + b, e - b, model_->stream(), "all-reduce of one layer's LoRA gradients");
    };
  }
  // Sets the after-layer-backward hook for one forward_backward, and clears it (also on a throw).
  struct hook_scope {
    hook_scope(cuda_model& m, std::function<void(int)> f) : m_(m) { m_.set_after_layer_backward(std::move(f)); }
    ~hook_scope() { m_.set_after_layer_backward(nullptr); }
    hook_scope(const hook_scope&) = delete;
    hook_scope& operator=(const hook_scope&) = delete;
    cuda_model& m_;
  };
  // mo.memory: the fastest plan (model_step::choose_memory) within the budget.
  void choose_memory(cuda::model_options& mo, const memory_request& mem) {
    const bool given = mem.budget_bytes > 0;
    const double budget = given ? mem.budget_bytes : plan_.default_budget();
    const std::string from = given ? "--memory-budget" : "the default: free device memory less 1 GiB";
    const std::int64_t seq_len = mem.seq_len > 0 ? mem.seq_len : T_;
    const auto c = plan_.choose_memory(T_, seq_len, mo, budget);
    require(c.fits, graph::memory_budget_error(budget, from, c.bytes), {"", "--memory-budget", {}});
    mo.memory = c.policy;
    cuda::model_options keep = mo;
    keep.memory = {};
    memory_plan_ = graph::memory_choice_text(c, plan_.memory_text(c.policy, mo.layers), budget, from,
                                             plan_.predict_total_bytes(T_, keep),
                                             plan_.choose_memory(T_, seq_len, mo, 0).bytes);
  }

  static std::string adapter_name(io::lora_target t) {
    return std::string(io::target_parent(t)) + "." + std::string(io::target_name(t));
  }

  // bf16 upload of one checkpoint tensor, shape-checked against `shape`.
  void upload(const io::checkpoint& ck, const std::string& name, std::vector<std::int64_t> shape, void* dst) {
    const auto& t = ck.at(name);
    io::require_shape(t, shape);
    staging_.resize(static_cast<std::size_t>(t.numel()));
    io::to_bf16(t, staging_);
    model_->upload(dst, staging_.data(), staging_.size() * sizeof(staging_[0]));
  }

  void load_weights(const std::filesystem::path& dir) {
    static_assert(sizeof(staging_[0]) == 2, "the device weights are 16-bit bf16");
    const auto ck = io::checkpoint::open(dir);
    const std::int64_t V = cfg_.vocab_size, H = plan_.hidden();
    upload(ck, "model.embed_tokens.weight", {V, H}, model_->embedding());
    upload(ck, "model.norm.weight", {H}, model_->final_norm());
    if (!cfg_.tie_word_embeddings) upload(ck, "lm_head.weight", {V, H}, model_->lm_head());
    for (int l = 0; l < cfg_.num_hidden_layers; ++l)
      for (const auto& w : model_->layer_weights()) {
        std::vector<std::int64_t> shape = w.rows ? std::vector<std::int64_t>{w.rows, w.cols}
                                                 : std::vector<std::int64_t>{w.cols};
        upload(ck, "model.layers." + std::to_string(l) + "." + w.name, shape, model_->layer_weight(l, w.name));
      }
    staging_.clear();
    staging_.shrink_to_fit();
  }

  // An adapter-layout tensor set (targeted modules) -> one flat f32 device
  // array of the model's layout; untargeted slots and padding 0.
  void upload_flat(float* dst, const io::lora_adapter& a) {
    std::vector<float> flat(model_->lora_elems(), 0.f);
    for (std::int64_t l = 0; l < a.num_layers; ++l)
      for (auto t : lora_.target_modules) {
        const auto& sl = model_->slot(static_cast<int>(l), adapter_name(t));
        const auto& p = a.at(l, t);
        require(p.a.size() == static_cast<std::size_t>(lora_.r * sl.in) &&
                    p.b.size() == static_cast<std::size_t>(sl.out * lora_.r),
                "LoRA shapes of the adapter and the CUDA model differ", {"", io::base_module_name(l, t), {}});
        std::copy(p.a.begin(), p.a.end(), flat.begin() + static_cast<std::ptrdiff_t>(sl.a_off));
        std::copy(p.b.begin(), p.b.end(), flat.begin() + static_cast<std::ptrdiff_t>(sl.b_off));
      }
    model_->upload(dst, flat.data(), flat.size() * sizeof(float));
  }

  // The inverse; with check_untargeted, untargeted slots must still be exactly 0.
  io::lora_adapter download_flat(const float* src, const char* what, bool check_untargeted = true) {
    model_->synchronize();
    std::vector<float> flat(model_->lora_elems());
    model_->download(flat.data(), src, flat.size() * sizeof(float));
    auto out = io::make_lora_adapter(lora_, cfg_);
    for (const auto& sl : model_->lora_slots()) {
      const auto t = io::target_from_name(sl.adapter.substr(sl.adapter.find('.') + 1));
      require(t.has_value(), "unknown LoRA slot '" + sl.adapter + "' in the CUDA model");
      const std::size_t na = static_cast<std::size_t>(lora_.r * sl.in), nb = static_cast<std::size_t>(sl.out * lora_.r);
      if (lora_.targets(*t)) {
        auto& p = out.at(sl.layer, *t);
        std::copy_n(flat.begin() + static_cast<std::ptrdiff_t>(sl.a_off), na, p.a.begin());
        std::copy_n(flat.begin() + static_cast<std::ptrdiff_t>(sl.b_off), nb, p.b.begin());
      } else if (check_untargeted) {
        for (std::size_t i = 0; i < na + nb; ++i)
          require(flat[(i < na ? sl.a_off + i : sl.b_off + i - na)] == 0.f,
                  std::string("an untargeted LoRA ") + what + " became non-zero on the GPU",
                  {"", io::base_module_name(sl.layer, *t), {}});
      }
    }
    return out;
  }

  // The kept segments, then one padding segment up to T; uploads the batch.
  void upload_batch(const token_batch& b) {
    const std::int64_t kept = b.tokens();
    require(kept <= T_, "a batch holds " + std::to_string(kept) + " tokens, more than the CUDA model's " +
                            std::to_string(T_));
    for (std::size_t s = 0, at = 0; s < b.seq_lens.size(); at += static_cast<std::size_t>(b.seq_lens[s]), ++s)
      for (std::int32_t t = 0; t < b.seq_lens[s]; ++t)  // model_step derives positions 0..n-1 per segment
        require(b.positions[at + static_cast<std::size_t>(t)] == t,
                "the CUDA backend expects positions 0..n-1 in every segment", {"", "positions", {}});
    ids_.assign(b.input_ids.begin(), b.input_ids.end());
    labels_.assign(b.labels.begin(), b.labels.end());
    seq_lens_.assign(b.seq_lens.begin(), b.seq_lens.end());
    if (kept < T_) {  // padding: its own segment, nothing counted
      ids_.resize(static_cast<std::size_t>(T_), 0);
      labels_.resize(static_cast<std::size_t>(T_), io::ignore_index);
      seq_lens_.push_back(static_cast<std::int32_t>(T_ - kept));
    }
    model_->set_batch(ids_, labels_, seq_lens_);
  }

  const cuda_model_plan& plan_;
  io::lora_config lora_;
  io::hf_config cfg_;
  std::int64_t T_ = 0;
  std::unique_ptr<cuda_model> model_;
  cuda::adamw_hparams hp_;
  std::vector<bf16> staging_;
  std::vector<std::int32_t> ids_, labels_, seq_lens_;
  std::vector<std::size_t> bucket_;  // [L + 1]: layer l's gradients start at bucket_[l]
  std::string memory_plan_;
};

}  // namespace staticgrad::train
