#pragma once
// The fine-tuning options, the per-step record and its progress line, shared
// by the CPU trainer (trainer.hpp) and the CUDA trainer (cuda_trainer.cuh).
// Kept apart from trainer.hpp because nvcc cannot compile the CPU model
// (models/qwen2_model.hpp): everything here is plain host C++ that both
// compilers accept.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/train/adamw.hpp"
#include "staticgrad/train/schedule.hpp"

namespace staticgrad::train {

struct train_options {
  io::lora_config lora;             // r, lora_alpha, lora_dropout, target_modules, use_rslora
  std::int64_t steps = 100;         // optimizer steps
  std::int64_t batch_tokens = 4096; // rows x max_len budget of one micro-batch
  std::int64_t max_len = 512;       // tokens per row; longer examples are truncated
  std::int64_t grad_accum = 1;      // micro-batches per optimizer step
  std::uint64_t seed = 0;
  adamw_options optim{.lr = 2e-4, .weight_decay = 0.0, .max_grad_norm = 1.0};
  schedule_kind schedule = schedule_kind::cosine;
  std::int64_t warmup_steps = 0;
  double lr_min = 0;
  std::size_t shuffle_buffer = 4096;
  bool skip_bad_lines = false;      // skip and count malformed data lines instead of failing
  bool drop_long = false;           // drop examples longer than max_len instead of truncating them
  bool truncate_text = false;       // {"text"} documents: truncate (like other shapes) instead of splitting into windows
  std::filesystem::path out;        // adapter directory written at the end (empty: not written)
  std::int64_t save_every = 0;      // > 0: also write out/checkpoint-<step> every that many steps
  std::ostream* log = &std::cout;   // progress lines; nullptr = quiet
};

struct step_record {
  std::int64_t step = 0;
  double loss = 0;
  std::int64_t tokens = 0;   // tokens the model ran (all kept segments)
  std::int64_t counted = 0;  // tokens the loss counts
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double elapsed_s = 0;
};

struct train_result {
  std::vector<step_record> steps;
  std::int64_t epochs = 1;  // passes over the data started
  io::data_stats data;      // of the last pass
};

// The progress line. snprintf, not fmt: this header is compiled by nvcc too,
// whose host pass rejects fmt 9's constexpr code. %.3e prints a two-digit
// exponent at least, as fmt's {:.3e} ("1.000e-02").
inline std::string format_step(const step_record& r, std::int64_t total) {
  const int w = static_cast<int>(std::to_string(total).size());
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "step %*lld/%lld  loss %.4f  tokens %lld  lr %.3e  grad_norm %.3f  tok/s %.0f  elapsed %.1fs", w,
                static_cast<long long>(r.step), static_cast<long long>(total), r.loss,
                static_cast<long long>(r.tokens), r.lr, r.grad_norm, r.tokens_per_s, r.elapsed_s);
  return buf;
}

// A 64-bit mix (splitmix64's finaliser) to derive the dropout seed of each
// micro-batch from (seed, step, micro).
inline std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The end of one optimizer step, the same for the CPU and the CUDA trainer:
// times (since `start`, and of this step since `t0`), the progress line, and
// the periodic adapter checkpoint through `save(dir)`.
template <class Save>
void finish_step(step_record& rec, std::chrono::steady_clock::time_point start, std::chrono::steady_clock::time_point t0,
                 std::int64_t tokens, const train_options& o, Save&& save) {
  const auto t1 = std::chrono::steady_clock::now();
  rec.elapsed_s = std::chrono::duration<double>(t1 - start).count();
  rec.tokens_per_s = double(tokens) / std::max(1e-9, std::chrono::duration<double>(t1 - t0).count());
  if (o.log) *o.log << format_step(rec, o.steps) << std::endl;
  if (o.save_every > 0 && rec.step % o.save_every == 0 && rec.step < o.steps && !o.out.empty())
    save(o.out / ("checkpoint-" + std::to_string(rec.step)));
}

}  // namespace staticgrad::train
