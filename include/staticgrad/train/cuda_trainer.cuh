#pragma once
// LoRA fine-tuning on the GPU: the CUDA counterpart of train::trainer
// (trainer.hpp), around one cuda::model_step<Plan> (backend/cuda/model_step.cuh).
//
//   checkpoint (config.json + safetensors, bf16/f16/f32) --to_bf16--> device weights
//   io::data_loader batch --pack (drop segments with nothing to count)--> kept segments
//     --pad to T = rows * max_len (one extra segment of id 0, labels -100)--> model_step::set_batch
//   model_step::step(adamw, lr) -> loss; last_grad_norm() -> progress line (format_step)
//   at the end (and every save_every steps): flat f32 LoRA -> io::lora_adapter -> write_peft_adapter
//
// Same semantics as the CPU trainer, by construction:
//  - data: the same io::data_options (rows = max(1, batch_tokens / max_len),
//    pack layout, loader seed mix_seed(seed, epoch)), the same segment filter
//    (a segment whose shifted labels are all -100 is dropped), epochs restart
//    the loader as the CPU trainer does;
//  - LoRA init: train::init_lora with the same seed on an io::lora_adapter of
//    the same config, copied into the model's flat array;
//  - schedule: lr_schedule::at(min(step, steps)); AdamW: the same options
//    (train::adamw_options -> cuda::adamw_hparams), bias corrections in double.
// Differences (docs/cuda.md "finetune on the GPU"):
//  - static shapes: the model is built for T = rows * max_len tokens. The kept
//    segments are followed by one padding segment (id 0, labels -100) filling
//    the batch to T. Attention never crosses a segment and the padding's
//    targets are all ignored, so it adds nothing to the loss or to any
//    gradient (its dlogits rows are 0); it only costs compute. `tokens` in the
//    progress line counts the kept tokens, as on the CPU.
//  - the CUDA model carries adapters on all seven projections. Untargeted
//    modules are held at A = B = 0, which keeps them exactly 0: dA = s (dY B)^T X
//    vanishes with B = 0 and dB = s dY^T (X A^T) with A = 0 (exact zeros in
//    floating point), so AdamW sees g = 0, m = v = 0, update 0 / (0 + eps) = 0,
//    decay 0 * (1 - lr wd) = 0. They add 0 to the gradient norm. (They still cost
//    the products of rank r: a mask would not save that.) save() checks that
//    they are still exactly 0.
//  - gradient accumulation as the CPU trainer (model_step::forward_backward
//    with the whole step's seed, accumulating); no LoRA dropout (refused).
//  - no fmt here or in what it includes: nvcc's host pass rejects fmt 9.
//  - bf16 weights and activations (the CPU model is f32): one step's loss is
//    expected within ~1e-4..1e-3 relative of the CPU's (test_model_step), not
//    bit for bit; trajectories drift slowly apart (test_finetune_cuda).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/check.cuh"
#include "staticgrad/backend/cuda/model_step.cuh"
#include "staticgrad/core/error.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/train/lora_init.hpp"
#include "staticgrad/train/schedule.hpp"
#include "staticgrad/train/train_options.hpp"

namespace staticgrad::train {

// Does the plan's block shape (cuda::plans::<size>::model::shape) match the config?
template <class Plan>
bool cuda_plan_matches(const io::hf_config& c) {
  return models::shape_matches<typename Plan::shape>(c);
}

template <class Plan>
std::string cuda_plan_shape(const char* label) {
  return std::string(label) + " " + models::shape_text<typename Plan::shape>();
}

template <class Plan>
class cuda_trainer {
 public:
  using model_t = cuda::model_step<Plan>;

  // `tok` must outlive the trainer. `model_dir`: the checkpoint directory
  // (config.json + safetensors); `files`: JSONL training data.
  cuda_trainer(const std::filesystem::path& model_dir, const io::tokenizer& tok, std::vector<std::string> files,
               train_options o)
      : tok_(tok), files_(std::move(files)), o_(std::move(o)) {
    require(o_.steps >= 1, "steps must be at least 1", {"", "steps", {}});
    require(o_.max_len >= 2, "max_len must be at least 2", {"", "max_len", {}});
    require(o_.batch_tokens >= 1, "batch_tokens must be positive", {"", "batch_tokens", {}});
    require(o_.grad_accum >= 1, "grad_accum must be at least 1", {"", "--grad-accum", {}});
    require(o_.warmup_steps >= 0, "warmup_steps must be non-negative", {"", "warmup_steps", {}});
    require(o_.lora.r >= 1, "lora r must be at least 1", {"", "lora_r", {}});
    require(!o_.lora.target_modules.empty(), "no LoRA target modules", {"", "target_modules", {}});
    require(o_.lora.lora_alpha > 0 && std::isfinite(o_.lora.lora_alpha), "lora_alpha must be a positive number",
            {"", "lora_alpha", {}});
    require(o_.lora.lora_dropout == 0,
            "--lora-dropout > 0 is not implemented on CUDA (use --device cpu, or --lora-dropout 0)",
            {"", "--lora-dropout", {}});
    cfg_ = io::read_hf_config(model_dir);
    const std::string cfg_file = (model_dir / "config.json").string();
    require(cuda_plan_matches<Plan>(cfg_), "the checkpoint's block shape does not match the CUDA plan " +
                                               cuda_plan_shape<Plan>(Plan::name),
            {cfg_file, "", {}});
    require(cfg_.num_hidden_layers >= 1, "num_hidden_layers must be positive", {cfg_file, "num_hidden_layers", {}});

    cuda::model_options mo;
    mo.layers = static_cast<int>(cfg_.num_hidden_layers);
    mo.vocab = cfg_.vocab_size;
    mo.tied = cfg_.tie_word_embeddings;
    mo.rank = static_cast<int>(o_.lora.r);
    mo.lora_scaling = static_cast<float>(o_.lora.scaling());
    mo.eps = static_cast<float>(cfg_.rms_norm_eps);
    mo.rope_theta = static_cast<float>(cfg_.rope_theta);
    T_ = rows() * o_.max_len;
    model_ = std::make_unique<model_t>(T_, mo);
    load_weights(model_dir);

    adapter_ = io::make_lora_adapter(o_.lora, cfg_);
    init_lora(adapter_, cfg_, o_.seed);
    upload_lora();

    hp_.lr = o_.optim.lr, hp_.beta1 = o_.optim.beta1, hp_.beta2 = o_.optim.beta2, hp_.eps = o_.optim.eps;
    hp_.weight_decay = o_.optim.weight_decay, hp_.max_grad_norm = o_.optim.max_grad_norm;
    sched_ = {o_.schedule, o_.optim.lr, o_.warmup_steps, o_.steps, o_.lr_min};
    open_loader();
  }

  std::int64_t rows() const { return std::max<std::int64_t>(1, o_.batch_tokens / o_.max_len); }
  std::int64_t tokens_per_step() const { return T_; }
  const io::hf_config& config() const { return cfg_; }
  const io::lora_adapter& adapter() const { return adapter_; }  // as of the last save() / download
  model_t& model() { return *model_; }

  // One optimizer step; returns its record (also printed when log is set).
  step_record step() {
    const auto t0 = std::chrono::steady_clock::now();
    if (!started_) start_ = t0, started_ = true;
    const std::int64_t s = ++step_;
    step_record rec;
    rec.step = s;
    rec.lr = sched_.at(std::min(s, o_.steps));
    std::int64_t kept = 0;
    if (o_.grad_accum == 1) {
      kept = next_batch();
      rec.loss = model_->step(hp_, rec.lr);  // one CUDA graph; synchronises (the loss is copied back)
      rec.counted = model_->counted();
    } else {
      // As the CPU trainer: grad_accum micro-batches, the loss seeded with
      // 1 / (counted tokens of the whole step), gradients accumulated, one update.
      std::vector<std::vector<std::int32_t>> mi, ml, ms;
      std::int64_t counted = 0;
      for (std::int64_t m = 0; m < o_.grad_accum; ++m) {
        kept += next_batch();
        counted += model_->counted();
        mi.push_back(ids_), ml.push_back(labels_), ms.push_back(seq_lens_);
      }
      model_->zero_grads();
      double loss_sum = 0;
      for (std::size_t m = 0; m < mi.size(); ++m) {
        model_->set_batch(mi[m], ml[m], ms[m]);
        loss_sum += model_->forward_backward(1.0 / static_cast<double>(counted), true).loss_sum;
      }
      model_->optimizer_step(hp_, rec.lr);
      rec.loss = loss_sum / static_cast<double>(counted);
      rec.counted = counted;
    }
    require(std::isfinite(rec.loss), "the loss is not finite at step " + std::to_string(s) + " (try a lower --lr)");
    rec.tokens = kept;
    rec.grad_norm = model_->last_grad_norm();
    finish_step(rec, start_, t0, kept, o_, [&](const std::filesystem::path& dir) { save(dir); });
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

  // Copies A and B back from the device into adapter() (checking that the
  // untargeted modules are still exactly 0) and writes the PEFT adapter
  // (adapter_config.json + adapter_model.safetensors, atomic).
  void save(const std::filesystem::path& dir) {
    download_lora();
    io::write_peft_adapter(dir, adapter_, cfg_);
  }

 private:
  static std::string adapter_name(io::lora_target t) {
    return std::string(io::target_parent(t)) + "." + std::string(io::target_name(t));
  }

  // bf16 upload of one checkpoint tensor, shape-checked against `shape`.
  void upload(const io::checkpoint& ck, const std::string& name, std::vector<std::int64_t> shape, cuda::bf16* dst) {
    const auto& t = ck.at(name);
    io::require_shape(t, shape);
    staging_.resize(static_cast<std::size_t>(t.numel()));
    io::to_bf16(t, staging_);
    SG_CUDA_CHECK(cudaMemcpy(dst, staging_.data(), staging_.size() * sizeof(staging_[0]), cudaMemcpyHostToDevice));
  }

  void load_weights(const std::filesystem::path& dir) {
    static_assert(sizeof(staging_[0]) == sizeof(cuda::bf16), "io's bf16 and CUDA's bf16 must both be 16 bits");
    const auto ck = io::checkpoint::open(dir);
    const std::int64_t V = cfg_.vocab_size, H = Plan::block::input_width;
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

  // adapter_ (targeted modules) -> the flat f32 array; untargeted slots and padding 0.
  void upload_lora() {
    std::vector<float> flat(model_->lora_elems(), 0.f);
    for (std::int64_t l = 0; l < adapter_.num_layers; ++l)
      for (auto t : adapter_.config.target_modules) {
        const auto& sl = model_->slot(static_cast<int>(l), adapter_name(t));
        const auto& p = adapter_.at(l, t);
        require(p.a.size() == static_cast<std::size_t>(o_.lora.r * sl.in) &&
                    p.b.size() == static_cast<std::size_t>(sl.out * o_.lora.r),
                "LoRA shapes of the adapter and the CUDA model differ", {"", io::base_module_name(l, t), {}});
        std::copy(p.a.begin(), p.a.end(), flat.begin() + static_cast<std::ptrdiff_t>(sl.a_off));
        std::copy(p.b.begin(), p.b.end(), flat.begin() + static_cast<std::ptrdiff_t>(sl.b_off));
      }
    SG_CUDA_CHECK(cudaMemcpy(model_->lora_params(), flat.data(), flat.size() * sizeof(float), cudaMemcpyHostToDevice));
    model_->sync_lora_bf16(true);
    model_->synchronize();
  }

  void download_lora() {
    model_->synchronize();
    std::vector<float> flat(model_->lora_elems());
    SG_CUDA_CHECK(cudaMemcpy(flat.data(), model_->lora_params(), flat.size() * sizeof(float), cudaMemcpyDeviceToHost));
    for (const auto& sl : model_->lora_slots()) {
      const auto t = io::target_from_name(sl.adapter.substr(sl.adapter.find('.') + 1));
      require(t.has_value(), "unknown LoRA slot '" + sl.adapter + "' in the CUDA model");
      const std::size_t na = static_cast<std::size_t>(o_.lora.r * sl.in), nb = static_cast<std::size_t>(sl.out * o_.lora.r);
      if (adapter_.config.targets(*t)) {
        auto& p = adapter_.at(sl.layer, *t);
        std::copy_n(flat.begin() + static_cast<std::ptrdiff_t>(sl.a_off), na, p.a.begin());
        std::copy_n(flat.begin() + static_cast<std::ptrdiff_t>(sl.b_off), nb, p.b.begin());
      } else {
        for (std::size_t i = 0; i < na; ++i)
          require(flat[sl.a_off + i] == 0.f, "an untargeted LoRA A became non-zero on the GPU",
                  {"", io::base_module_name(sl.layer, *t), {}});
        for (std::size_t i = 0; i < nb; ++i)
          require(flat[sl.b_off + i] == 0.f, "an untargeted LoRA B became non-zero on the GPU",
                  {"", io::base_module_name(sl.layer, *t), {}});
      }
    }
  }

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

  // The loader batch's segments with something to count (train::pack_loader_batch's
  // rule, batching.hpp, which nvcc cannot include), then one padding segment
  // up to T. Uploads the batch; returns the kept token count.
  std::int64_t pack(const io::batch& in) {
    ids_.clear(), labels_.clear(), seq_lens_.clear();
    const std::int64_t V = cfg_.vocab_size;
    for (std::size_t s = 0; s + 1 < in.cu_seqlens.size(); ++s) {
      const std::int64_t from = in.cu_seqlens[s], n = in.cu_seqlens[s + 1] - from;
      const std::int32_t* ids = in.input_ids.data() + from;
      const std::int32_t* lab = in.labels.data() + from;
      std::int64_t k = 0;
      for (std::int64_t t = 1; t < n; ++t) k += lab[t] != io::ignore_index;
      if (k == 0) continue;
      for (std::int64_t t = 0; t < n; ++t) {
        require(ids[t] >= 0 && ids[t] < V,
                "token id " + std::to_string(ids[t]) + " is outside the model's vocabulary (vocab_size " +
                    std::to_string(V) + ")",
                {files_.front(), "input_ids", std::nullopt});
        // model_step derives positions 0..n-1 per segment: the loader's must agree.
        require(in.positions[static_cast<std::size_t>(from + t)] == t,
                "the CUDA trainer expects positions 0..n-1 in every segment", {files_.front(), "positions", {}});
      }
      ids_.insert(ids_.end(), ids, ids + n);
      labels_.insert(labels_.end(), lab, lab + n);
      seq_lens_.push_back(static_cast<std::int32_t>(n));
    }
    const std::int64_t kept = static_cast<std::int64_t>(ids_.size());
    if (kept == 0) return 0;
    require(kept <= T_, "a loader batch holds more tokens than rows * max_len");
    if (kept < T_) {  // padding: its own segment, nothing counted
      ids_.resize(static_cast<std::size_t>(T_), 0);
      labels_.resize(static_cast<std::size_t>(T_), io::ignore_index);
      seq_lens_.push_back(static_cast<std::int32_t>(T_ - kept));
    }
    model_->set_batch(ids_, labels_, seq_lens_);
    return model_->counted() > 0 ? kept : 0;
  }

  std::int64_t next_batch() {
    io::batch b;
    bool fresh = false;
    for (;;) {
      if (loader_->next(b)) {
        if (const std::int64_t kept = pack(b); kept > 0) return kept;
        continue;
      }
      require(!fresh, "the training data has no example with a token to train on", {files_.front(), "", {}});
      ++epoch_;
      open_loader();
      fresh = true;
    }
  }

  const io::tokenizer& tok_;
  std::vector<std::string> files_;
  train_options o_;
  io::hf_config cfg_;
  std::int64_t T_ = 0;
  std::unique_ptr<model_t> model_;
  cuda::adamw_hparams hp_;
  lr_schedule sched_;
  io::lora_adapter adapter_;
  std::unique_ptr<io::data_loader> loader_;
  std::vector<bf16> staging_;
  std::vector<std::int32_t> ids_, labels_, seq_lens_;
  std::int64_t step_ = 0, epoch_ = 0;
  bool started_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace staticgrad::train
