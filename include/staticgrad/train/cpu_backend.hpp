#pragma once
// The CPU model (models::qwen2_model<Shape>) behind the training loop's
// backend interface (backend.hpp): f32 LoRA parameters and gradients as
// io::lora_adapter, train::adamw_lora for the update.
//
//   train_step: zero dA, dB -> model.step(micro m, backward, seed_scale, dropout_seed[m]) for each m
//               -> (data-parallel: dA, dB summed over the ranks) -> clip + AdamW (adamw_lora::step)
//   eval_loss_sum: model.step(batch, no backward): the head plan's chunked LM head + cross-entropy
//
// Deterministic: single-threaded, fixed-order arithmetic; the same
// parameters, moments, step count and batches give the same bits, which is
// what makes a resumed run equal an uninterrupted one.
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/backend.hpp"
#include "staticgrad/train/batching.hpp"
#include "staticgrad/train/distributed.hpp"

namespace staticgrad::train {

template <class Shape>
class cpu_backend final : public backend {
 public:
  using model_t = models::qwen2_model<Shape>;

  // Loads the checkpoint directory; the adapter starts at zero (set_adapter).
  // A memory_request with a budget picks the memory plan (qwen2_model::plan_memory).
  cpu_backend(const std::filesystem::path& model_dir, const io::lora_config& lora, const adamw_options& optim,
              const memory_request& mem = {})
      : cpu_backend(model_t::load(model_dir), lora, optim) {
    if (mem.budget_bytes > 0) choose_memory(mem);
  }
  cpu_backend(std::unique_ptr<model_t> model, const io::lora_config& lora, const adamw_options& optim)
      : cpu_backend(*model, lora, optim) {
    owned_ = std::move(model);
  }
  // A model the caller owns (it must outlive the backend; the backend attaches its adapter to it).
  cpu_backend(model_t& model, const io::lora_config& lora, const adamw_options& optim) : model_(&model), opt_(optim) {
    adapter_ = io::make_lora_adapter(lora, model_->config());
    grads_ = io::make_lora_adapter(lora, model_->config());
    model_->attach(&adapter_, &grads_);
  }

  model_t& model() { return *model_; }
  const io::hf_config& config() const override { return model_->config(); }
  backend_features features() const override { return {"cpu", true}; }
  std::int64_t max_batch_tokens() const override { return 0; }

  void set_adapter(const io::lora_adapter& a) override {
    require(a.config.r == adapter_.config.r && a.config.target_modules == adapter_.config.target_modules &&
                a.num_layers == adapter_.num_layers,
            "the adapter's rank, targets or layers differ from the training configuration");
    for (std::int64_t l = 0; l < a.num_layers; ++l)
      for (auto t : a.config.target_modules) adapter_.at(l, t) = a.at(l, t);
  }
  io::lora_adapter adapter() override { return adapter_; }

  void set_optimizer(const optimizer_state& s) override {
    std::vector<std::vector<float>> m, v;
    auto mm = s.m, vv = s.v;
    for_each_lora_tensor(mm, vv, [&](std::span<float> a, std::span<float> b) {
      m.emplace_back(a.begin(), a.end());
      v.emplace_back(b.begin(), b.end());
    });
    if (s.steps == 0) m.clear(), v.clear();  // untouched: allocated on the first step
    opt_.optimizer().restore(s.steps, std::move(m), std::move(v));
  }
  optimizer_state optimizer() override {
    optimizer_state s{opt_.optimizer().steps(), io::make_lora_adapter(adapter_.config, config()),
                      io::make_lora_adapter(adapter_.config, config())};
    const auto& m = opt_.optimizer().exp_avg();
    const auto& v = opt_.optimizer().exp_avg_sq();
    std::size_t i = 0;
    for_each_lora_tensor(s.m, s.v, [&](std::span<float> a, std::span<float> b) {
      if (i < m.size()) std::copy(m[i].begin(), m[i].end(), a.begin()), std::copy(v[i].begin(), v[i].end(), b.begin());
      ++i;
    });
    return s;
  }

  step_outputs train_step(const step_inputs& in) override {
    for_each_lora_tensor(adapter_, grads_, [](std::span<float>, std::span<float> g) { std::fill(g.begin(), g.end(), 0.f); });
    step_outputs out;
    for (std::size_t m = 0; m < in.micro.size(); ++m) {
      const auto layout = cpu_layout(in.micro[m]);
      const models::batch_view view{in.micro[m].input_ids, in.micro[m].labels, layout.view()};
      out.loss_sum += model_->step(view, true, in.seed_scale, in.dropout_seed[m]).loss_sum;
    }
    if (in.comm)  // data-parallel (the in-process test group): the other ranks' micro-batches' gradients
      for_each_lora_tensor(adapter_, grads_, [&](std::span<float>, std::span<float> g) {
        in.comm->all_reduce_host_f32(g, "the LoRA gradients");
      });
    out.grad_norm = grad_norm(adapter_, grads_);
    if (!std::isfinite(out.grad_norm) || !std::isfinite(out.loss_sum)) return out;  // no update from a NaN
    opt_.step(adapter_, grads_, in.lr);
    return out;
  }

  double eval_loss_sum(const token_batch& b) override {
    const auto layout = cpu_layout(b);
    return model_->step({b.input_ids, b.labels, layout.view()}, false).loss_sum;
  }

  std::string first_non_finite() override { return describe_first_non_finite(grads_, adapter_); }

  std::string memory_plan() const override { return memory_plan_; }

  // The fastest memory plan whose step buffers (qwen2_model::predict_bytes:
  // weights, LoRA state, residual stream, saved arenas, workspace in f32)
  // fit mem.budget_bytes; throws naming --memory-budget when none does.
  void choose_memory(const memory_request& mem) {
    const int r = int(adapter_.config.r);
    const auto c = model_->plan_memory(mem.tokens, mem.seq_len, r, mem.budget_bytes);
    const std::string from = "--memory-budget; the CPU model's f32 step buffers";
    require(c.fits, graph::memory_budget_error(mem.budget_bytes, from, c.bytes), {"", "--memory-budget", {}});
    model_->set_memory(c.policy);
    memory_plan_ = graph::memory_choice_text(c, graph::policy_text(model_t::block_program::sched, c.policy, int(model_->layers())),
                                             mem.budget_bytes, from, model_->predict_bytes(mem.tokens, r, {}),
                                             model_->plan_memory(mem.tokens, mem.seq_len, r, 0).bytes);
  }

  std::uint64_t memory_bytes() override {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return std::uint64_t(u.ru_maxrss) * 1024u;  // Linux: kilobytes
  }

 private:
  model_t* model_;
  std::unique_ptr<model_t> owned_;
  adamw_lora opt_;
  io::lora_adapter adapter_, grads_;
  std::string memory_plan_ = "memory: keep every saved value (no --memory-budget; on the CPU it bounds the model's f32 step buffers)";
};

}  // namespace staticgrad::train
