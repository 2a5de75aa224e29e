#pragma once
// train::training_loop's checkpoints: the eval record and the best adapter,
// the resume fingerprint, resume, save and the files of OUT (declared in
// loop.hpp). Inline in header-only use; compiled once in
// src/train/loop_checkpoint.cpp under STATICGRAD_PRECOMPILED_TRAINING_LOOP.
#include "staticgrad/train/loop.hpp"

namespace staticgrad::train {

STATICGRAD_LOOP_INLINE bool training_loop::note_eval(double loss, std::int64_t step) {
  if (state_.evals == 0 || loss < state_.best_eval) {
    state_.best_eval = loss;
    state_.best_step = step;
    state_.evals_without_improvement = 0;
    best_ = b_.adapter();
    if (!o_.out.empty() && rank() == 0) write_best_adapter(o_.out, *best_, b_.config(), step, loss);
  } else {
    ++state_.evals_without_improvement;
  }
  ++state_.evals;
  return o_.early_stopping_patience > 0 && state_.evals_without_improvement >= o_.early_stopping_patience;
}
STATICGRAD_LOOP_INLINE io::lora_adapter training_loop::best_adapter() {
  if (best_) return *best_;
  const auto dir = o_.out / best_adapter_dir;
  require(!o_.out.empty() && std::filesystem::exists(dir / "adapter_config.json"),
          "the best eval's adapter (step " + std::to_string(state_.best_step) + ") is not in the output directory",
          {dir.string(), "--early-stopping-patience", {}});
  const auto best = nlohmann::json::parse(io::read_text_file((dir / "best.json").string()), nullptr, false);
  require(best.is_object() && best.value("step", std::int64_t{-1}) == state_.best_step,
          "best.json does not name the best eval's step " + std::to_string(state_.best_step),
          {(dir / "best.json").string(), "step", {}});
  return io::read_peft_adapter(dir, b_.config());
}
STATICGRAD_LOOP_INLINE nlohmann::json training_loop::fingerprint(std::int64_t warmup) const {
  std::vector<std::string> targets;
  for (auto t : o_.lora.target_modules) targets.emplace_back(io::target_name(t));
  const char* kinds[] = {"constant", "cosine", "linear"};
  return {{"--data", files_},
          {"--seed", o_.seed},
          {"--steps", total_},
          {"--lora-r", o_.lora.r},
          {"--lora-alpha", o_.lora.lora_alpha},
          {"--lora-dropout", o_.lora.lora_dropout},
          {"--use-rslora", o_.lora.use_rslora},
          {"--target-modules", targets},
          {"--lr", o_.optim.lr},
          {"--weight-decay", o_.optim.weight_decay},
          {"--max-grad-norm", o_.optim.max_grad_norm},
          {"--schedule", kinds[static_cast<int>(o_.schedule)]},
          {"--warmup-steps", warmup},
          {"--min-lr-ratio", o_.min_lr_ratio},
          {"--batch-tokens", o_.batch_tokens},
          {"--max-len", o_.max_len},
          {"--grad-accum", global_micro_batches()},  // x ranks: a resume may change N, not the global batch
          {"--skip-bad-lines", o_.skip_bad_lines},
          {"--drop-long", o_.drop_long},
          {"--truncate-text", o_.truncate_text}};
}
STATICGRAD_LOOP_INLINE void training_loop::resume() {
  const auto dir = resolve_checkpoint(o_.resume);
  auto ck = read_checkpoint(dir, b_.config());
  for (const auto& [flag, value] : ck.state.options.items()) {
    const auto mine = state_.options.find(flag);
    require(mine != state_.options.end() && *mine == value,
            "the checkpoint was trained with " + flag + " " + value.dump() + ", this run has " +
                (mine == state_.options.end() ? std::string("none") : mine->dump()) +
                " (a resumed run repeats every option that shapes the training)",
            {(dir / "trainer_state.json").string(), flag, {}});
  }
  require(ck.state.step <= total_, "the checkpoint is past the last step", {dir.string(), "--steps", {}});
  b_.set_adapter(ck.adapter);
  b_.set_optimizer(ck.optimizer);
  const auto options = state_.options;
  state_ = ck.state;
  state_.options = options;
  if (state_.evals > 0) last_eval_ = state_.best_eval;
  if (!o_.out.empty()) history_ = read_metrics(o_.out / "metrics.jsonl", state_.step);
  log_line(fmt::format("resumed from {} at step {}/{} (epoch {}, {} batches into it)", dir.string(), state_.step,
                       total_, state_.epoch + 1, state_.epoch_batches));
}
STATICGRAD_LOOP_INLINE std::filesystem::path training_loop::save_checkpoint() {
  state_.elapsed_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
  t_start_ = std::chrono::steady_clock::now();
  adapter_ = b_.adapter();
  const auto dir = write_checkpoint(o_.out, adapter_, b_.config(), b_.optimizer(), state_);
  if (o_.save_total_limit > 0) prune_checkpoints(o_.out, o_.save_total_limit);
  write_page();
  return dir;
}
STATICGRAD_LOOP_INLINE void training_loop::write_final_adapter() { io::write_peft_adapter(o_.out, adapter_, b_.config()); }
STATICGRAD_LOOP_INLINE void training_loop::write_page() {
  std::string title = "staticgrad finetune: " + o_.out.filename().string();
  io::write_text_atomic(o_.out / "training.html", training_html(history_, title));
}
}  // namespace staticgrad::train
