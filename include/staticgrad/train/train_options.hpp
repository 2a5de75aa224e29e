#pragma once
// The fine-tuning options (one field per `finetune` flag, named in every
// error by the flag), the per-step record, and check_options(): every range
// check, run before anything is loaded or allocated.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/bounds.hpp"
#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/schedule.hpp"

namespace staticgrad::train {

struct train_options {
  io::lora_config lora;             // --lora-r, --lora-alpha, --lora-dropout, --target-modules, --use-rslora
  std::int64_t steps = 100;         // --steps: optimizer steps (unless epochs > 0)
  double epochs = 0;                // --epochs: > 0 sets steps = ceil(epochs * micro-batches of one pass / grad_accum)
  std::int64_t batch_tokens = 4096; // --batch-tokens: rows x max_len budget of one micro-batch
  std::int64_t max_len = 512;       // --max-len: tokens per row; longer examples are truncated
  std::int64_t grad_accum = 1;      // --grad-accum: micro-batches per optimizer step
  std::uint64_t seed = 0;           // --seed
  adamw_options optim{.lr = 2e-4, .weight_decay = 0.0, .max_grad_norm = 1.0};
  schedule_kind schedule = schedule_kind::cosine;
  std::int64_t warmup_steps = 0;    // --warmup-steps
  double warmup_ratio = 0;          // --warmup-ratio: warmup = ceil(ratio * steps) when warmup_steps is 0
  double min_lr_ratio = 0.1;        // --min-lr-ratio: a decaying schedule ends at ratio * lr (never 0)
  std::size_t shuffle_buffer = 4096;
  bool skip_bad_lines = false;      // skip and count malformed data lines instead of failing
  bool drop_long = false;           // drop examples longer than max_len instead of truncating them
  bool truncate_text = false;       // {"text"} documents: truncate instead of splitting into windows
  std::filesystem::path out;        // --out: adapter, checkpoints, metrics.jsonl, training.html (empty: none)
  std::int64_t save_every = 0;      // --save-every: > 0: out/checkpoint-<step> every that many steps
  std::int64_t save_total_limit = 0;// --save-total-limit: > 0: keep only the newest that many checkpoints
  std::filesystem::path resume;     // --resume: a checkpoint directory, or an out directory (its newest)
  std::vector<std::string> eval_files;   // --eval-data
  std::int64_t eval_every = 0;      // --eval-every: > 0: eval loss every that many steps (and at the end)
  std::int64_t early_stopping_patience = 0;  // --early-stopping-patience: stop after P evals without a new best
  double memory_budget_gib = 0;     // --memory-budget: GiB for the step's buffers (0: CUDA free memory less 1 GiB; CPU keep all)
  std::int64_t log_every = 0;       // --log-every: plain lines every N steps (0: a live line on a terminal, else every step)
  std::ostream* log = &std::cout;   // progress; nullptr = quiet
};

// Largest --max-len accepted whatever the model (data_loader's row bound).
inline constexpr std::int64_t max_max_len = std::int64_t(io::data_loader::max_seq_len);

// Every option in range, each failure naming its flag. With the model's
// config (read before its weights), also the bounds that depend on it.
inline void check_options(const train_options& o, const io::hf_config* model = nullptr) {
  auto flag = [](const char* f) { return error_context{"", f, {}}; };
  auto finite_in = [&](double v, double lo, double hi, bool lo_open, const char* f, const char* what) {
    const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
    require(ok, "got " + std::to_string(v) + "; expected " + what, flag(f));
  };
  require(o.steps >= 1, "got " + std::to_string(o.steps) + "; expected at least 1", flag("--steps"));
  finite_in(o.epochs, 0, 1e6, false, "--epochs", "a number of passes in [0, 1e6] (0: use --steps)");
  require(o.max_len >= 2 && o.max_len <= max_max_len,
          "got " + std::to_string(o.max_len) + "; expected [2, " + std::to_string(max_max_len) + "]", flag("--max-len"));
  if (model)
    require(o.max_len <= model->max_position_embeddings,
            "got " + std::to_string(o.max_len) + "; the model supports at most " +
                std::to_string(model->max_position_embeddings) + " positions (max_position_embeddings)",
            flag("--max-len"));
  require(o.batch_tokens >= 1, "got " + std::to_string(o.batch_tokens) + "; expected at least 1", flag("--batch-tokens"));
  const std::int64_t rows = std::max<std::int64_t>(1, o.batch_tokens / o.max_len);
  require(rows <= std::int64_t(io::data_loader::max_batch_tokens) / o.max_len,
          "got " + std::to_string(o.batch_tokens) + "; a micro-batch holds at most " +
              std::to_string(io::data_loader::max_batch_tokens) + " tokens",
          flag("--batch-tokens"));
  require(o.grad_accum >= 1 && o.grad_accum <= 1 << 20,
          "got " + std::to_string(o.grad_accum) + "; expected [1, 1048576]", flag("--grad-accum"));
  // The step's micro-batches are held together (ids, labels, positions: 12 bytes a token),
  // and the smallest activations take ~64 bytes a token more: refuse what cannot fit.
  io::require_fits_memory(std::uint64_t(rows * o.max_len) * (64u + 12u * std::uint64_t(o.grad_accum)),
                          "a step of " + std::to_string(o.grad_accum) + " micro-batches of " +
                              std::to_string(rows * o.max_len) + " tokens",
                          flag("--batch-tokens"));
  require(o.warmup_steps >= 0, "got " + std::to_string(o.warmup_steps) + "; expected at least 0", flag("--warmup-steps"));
  finite_in(o.warmup_ratio, 0, 1, false, "--warmup-ratio", "a fraction in [0, 1]");
  require(o.warmup_steps == 0 || o.warmup_ratio == 0, "give --warmup-steps or --warmup-ratio, not both",
          flag("--warmup-ratio"));
  finite_in(o.min_lr_ratio, 0, 1, true, "--min-lr-ratio",
            "a fraction in (0, 1]: the last steps of a decaying schedule must still learn");
  finite_in(o.optim.lr, 0, 1e3, true, "--lr", "a positive number");
  finite_in(o.optim.weight_decay, 0, 1e3, false, "--weight-decay", "a number >= 0");
  finite_in(o.optim.max_grad_norm, 0, 1e12, false, "--max-grad-norm", "a number >= 0 (0: no clipping)");
  finite_in(o.optim.beta1, 0, 1, false, "beta1", "[0, 1)");
  require(o.optim.beta1 < 1 && o.optim.beta2 >= 0 && o.optim.beta2 < 1 && o.optim.eps >= 0 && std::isfinite(o.optim.eps),
          "AdamW's betas must be in [0, 1) and eps >= 0", flag("beta2"));
  require(o.lora.r >= 1 && o.lora.r <= io::max_lora_rank,
          "got " + std::to_string(o.lora.r) + "; expected [1, " + std::to_string(io::max_lora_rank) + "]",
          flag("--lora-r"));
  if (model) {
    const std::int64_t narrowest = std::min({model->hidden_size, model->kv_dim(), model->intermediate_size});
    require(o.lora.r <= narrowest, "got " + std::to_string(o.lora.r) + "; a LoRA rank above the narrowest projection (" +
                                       std::to_string(narrowest) + ") adds nothing",
            flag("--lora-r"));
    io::require_adapter_fits(o.lora, *model, flag("--lora-r"));
  }
  finite_in(o.lora.lora_alpha, 0, 1e9, true, "--lora-alpha", "a positive number");
  finite_in(o.lora.lora_dropout, 0, 1, false, "--lora-dropout", "a probability in [0, 1)");
  require(o.lora.lora_dropout < 1, "got 1; expected a probability in [0, 1)", flag("--lora-dropout"));
  require(!o.lora.target_modules.empty(), "no LoRA target modules", flag("--target-modules"));
  finite_in(o.memory_budget_gib, 0, 1e6, false, "--memory-budget", "GiB in [0, 1e6] (0: the default)");
  require(o.save_every >= 0, "got " + std::to_string(o.save_every) + "; expected at least 0", flag("--save-every"));
  require(o.save_total_limit >= 0, "got " + std::to_string(o.save_total_limit) + "; expected at least 0",
          flag("--save-total-limit"));
  require(o.eval_every >= 0, "got " + std::to_string(o.eval_every) + "; expected at least 0", flag("--eval-every"));
  require(o.eval_every == 0 || !o.eval_files.empty(), "--eval-every needs --eval-data", flag("--eval-every"));
  require(o.early_stopping_patience >= 0, "got " + std::to_string(o.early_stopping_patience) + "; expected at least 0",
          flag("--early-stopping-patience"));
  require(o.early_stopping_patience == 0 || o.eval_every > 0,
          "--early-stopping-patience needs --eval-every (and --eval-data)", flag("--early-stopping-patience"));
  require(o.log_every >= 0, "got " + std::to_string(o.log_every) + "; expected at least 0", flag("--log-every"));
  require(o.shuffle_buffer <= io::data_loader::max_buffered, "above the limit", flag("shuffle_buffer"));
  require(o.resume.empty() || !o.out.empty(), "--resume needs --out", flag("--resume"));
}

struct step_record {
  std::int64_t step = 0;
  std::int64_t epoch = 1;    // 1-based pass over the data this step's last micro-batch came from
  double loss = 0;
  std::int64_t tokens = 0;   // tokens the model ran (all kept segments)
  std::int64_t counted = 0;  // tokens the loss counts
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double elapsed_s = 0;      // wall time since the run began (resumed runs: including the earlier part)
  std::int64_t tokens_total = 0;
  std::uint64_t memory_bytes = 0;
  double eval_loss = std::numeric_limits<double>::quiet_NaN();  // NaN: not evaluated at this step
};

struct train_result {
  std::vector<step_record> steps;  // of this process (a resumed run: from the resumed step on)
  std::int64_t epochs = 1;         // passes over the data started
  io::data_stats data;             // of the last pass
  int stopped_by_signal = 0;       // SIGINT / SIGTERM: a checkpoint was written, the run stopped
  bool early_stopped = false;
  double final_eval_loss = std::numeric_limits<double>::quiet_NaN();
};

// A 64-bit mix (splitmix64's finaliser) to derive the dropout seed of each
// micro-batch from (seed, step, micro) and the loader seed of each epoch.
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace staticgrad::train
