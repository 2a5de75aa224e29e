#pragma once
// The LoRA fine-tuning loop on the CPU model:
//   data_loader batch -> pack_loader_batch (drop segments with nothing to
//   count) -> model.step(backward) per micro-batch -> AdamW -> progress line
//   -> (every save_every steps and at the end) the PEFT adapter.
//
// Semantics (docs/training.md):
//  - One optimizer step = grad_accum micro-batches; each micro-batch is one
//    loader batch of rows = max(1, batch_tokens / max_len) rows of max_len
//    tokens (examples packed first-fit, padding dropped before the model).
//  - The step's loss is the mean token cross-entropy over all counted tokens
//    of its micro-batches (not a mean of means): every micro-batch's backward
//    is seeded with 1 / (counted tokens of the whole step).
//  - When the data runs out, a new epoch starts with the loader reseeded
//    (seed + epoch), so `steps` may exceed one pass over the data.
//  - Deterministic for a seed: data order (loader seed), LoRA init (init_lora
//    seed), dropout masks (seed, step, micro-batch) and single-threaded
//    arithmetic give the same adapter bit for bit.
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/batching.hpp"
#include "staticgrad/train/lora_init.hpp"
#include "staticgrad/train/schedule.hpp"
#include "staticgrad/train/train_options.hpp"

namespace staticgrad::train {

template <class Shape>
class trainer {
 public:
  // `model` and `tok` must outlive the trainer. `files`: JSONL training data
  // (input_ids/labels, text, messages or instruction lines).
  trainer(models::qwen2_model<Shape>& model, const io::tokenizer& tok, std::vector<std::string> files,
          train_options o)
      : model_(model), tok_(tok), files_(std::move(files)), o_(std::move(o)), opt_(o_.optim) {
    require(o_.steps >= 1, "steps must be at least 1", {"", "steps", {}});
    require(o_.max_len >= 2, "max_len must be at least 2", {"", "max_len", {}});
    require(o_.batch_tokens >= 1, "batch_tokens must be positive", {"", "batch_tokens", {}});
    require(o_.grad_accum >= 1, "grad_accum must be at least 1", {"", "grad_accum", {}});
    require(o_.warmup_steps >= 0, "warmup_steps must be non-negative", {"", "warmup_steps", {}});
    require(o_.lora.r >= 1, "lora r must be at least 1", {"", "lora_r", {}});
    require(!o_.lora.target_modules.empty(), "no LoRA target modules", {"", "target_modules", {}});
    require(o_.lora.lora_alpha > 0 && std::isfinite(o_.lora.lora_alpha), "lora_alpha must be a positive number",
            {"", "lora_alpha", {}});
    require(o_.lora.lora_dropout >= 0 && o_.lora.lora_dropout < 1, "lora_dropout must be in [0, 1)",
            {"", "lora_dropout", {}});
    adapter_ = io::make_lora_adapter(o_.lora, model.config());
    grads_ = io::make_lora_adapter(o_.lora, model.config());
    init_lora(adapter_, model.config(), o_.seed);
    model_.attach(&adapter_, &grads_);
    sched_ = {o_.schedule, o_.optim.lr, o_.warmup_steps, o_.steps, o_.lr_min};
    open_loader();
  }

  std::int64_t rows() const { return std::max<std::int64_t>(1, o_.batch_tokens / o_.max_len); }
  const io::lora_adapter& adapter() const { return adapter_; }

  // One optimizer step; returns its record (also printed when log is set).
  step_record step() {
    const auto t0 = std::chrono::steady_clock::now();
    if (!started_) start_ = t0, started_ = true;
    std::vector<packed_batch> micro;
    std::int64_t counted = 0, tokens = 0;
    for (std::int64_t m = 0; m < o_.grad_accum; ++m) {
      micro.push_back(next_batch());
      counted += micro.back().counted;
      tokens += micro.back().tokens();
    }
    zero_grads();
    double loss_sum = 0;
    const std::int64_t s = ++step_;
    for (std::size_t m = 0; m < micro.size(); ++m) {
      const auto r = model_.step(micro[m].view(), true, 1.0 / double(counted),
                                 mix_seed(mix_seed(o_.seed, std::uint64_t(s)), m));
      loss_sum += r.loss_sum;
    }
    step_record rec;
    rec.step = s;
    rec.loss = loss_sum / double(counted);
    require(std::isfinite(rec.loss), "the loss is not finite at step " + std::to_string(s) +
                                          " (try a lower --lr)");
    rec.tokens = tokens;
    rec.counted = counted;
    rec.lr = sched_.at(std::min(s, o_.steps));
    rec.grad_norm = opt_.step(adapter_, grads_, rec.lr);
    finish_step(rec, start_, t0, tokens, o_, [&](const std::filesystem::path& dir) { save(dir); });
    return rec;
  }

  // All steps, then the adapter to `out` (when set).
  train_result run() {
    train_result res;
    while (step_ < o_.steps) res.steps.push_back(step());
    res.epochs = epoch_ + 1;
    res.data = loader_->stats();
    if (!o_.out.empty()) save(o_.out);
    return res;
  }

  // Writes the PEFT adapter (adapter_config.json + adapter_model.safetensors, atomic).
  void save(const std::filesystem::path& dir) const { io::write_peft_adapter(dir, adapter_, model_.config()); }

 private:
  void open_loader() {
    io::data_options d;
    d.max_len = std::size_t(o_.max_len);
    d.rows = std::size_t(rows());
    d.layout = io::row_layout::pack;
    d.seed = mix_seed(o_.seed, std::uint64_t(epoch_));
    d.shuffle_buffer = o_.shuffle_buffer;
    d.skip_bad_lines = o_.skip_bad_lines;
    d.overflow = o_.drop_long ? io::overflow_policy::drop : io::overflow_policy::truncate;
    d.split_long_text = !o_.truncate_text;
    loader_ = std::make_unique<io::data_loader>(files_, tok_, d);
  }

  packed_batch next_batch() {
    io::batch b;
    bool fresh = false;
    for (;;) {
      if (loader_->next(b)) {
        auto p = pack_loader_batch(b, model_.vocab(), files_.front());
        if (p.counted > 0) return p;
        continue;  // cannot happen with the loader's filtering; kept as a guard
      }
      require(!fresh, "the training data has no example with a token to train on", {files_.front(), "", {}});
      ++epoch_;
      open_loader();
      fresh = true;
    }
  }

  void zero_grads() {
    for_each_lora_tensor(adapter_, grads_, [](std::span<float>, std::span<float> g) {
      std::fill(g.begin(), g.end(), 0.f);
    });
  }

  models::qwen2_model<Shape>& model_;
  const io::tokenizer& tok_;
  std::vector<std::string> files_;
  train_options o_;
  adamw_lora opt_;
  lr_schedule sched_;
  io::lora_adapter adapter_, grads_;
  std::unique_ptr<io::data_loader> loader_;
  std::int64_t step_ = 0, epoch_ = 0;
  bool started_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace staticgrad::train
