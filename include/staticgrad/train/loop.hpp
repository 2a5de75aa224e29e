#pragma once
// The one training loop, for every backend (backend.hpp: the CPU model, the
// CUDA model step). It owns data, epochs, schedule, option checks, logging,
// evaluation, metrics and checkpoints; the backend only runs steps.
//
//   data_loader (epoch e, seed mix_seed(seed, e)) --pack_loader_batch--> token_batch x grad_accum
//     --backend.train_step(seed_scale 1/counted of the step, dropout seeds, lr = schedule(step))
//     --> step_record --> progress line, OUT/metrics.jsonl
//   every eval_every steps and at the end: eval loss of --eval-data (backend.eval_loss_sum)
//   every save_every steps, on SIGINT / SIGTERM: OUT/checkpoint-<step> (training_checkpoint.hpp)
//   at the end: the PEFT adapter in OUT, OUT/training.html
//
// Semantics (docs/training.md): one optimizer step = grad_accum micro-batches
// of rows = max(1, batch_tokens / max_len) rows of max_len tokens; the step's
// loss is the mean token cross-entropy over all counted tokens of its
// micro-batches; when the data runs out the next epoch starts with the loader
// reseeded. The data position is (epoch, loader batches taken in it): a
// resumed run reopens that epoch's loader and skips that many batches, which
// replays the same order (the loader is a function of its files and seed).
//
// Data-parallel (docs/multi_gpu.md): with a communicator of N ranks, one step
// reads grad_accum x N micro-batches in the order one process would (every
// rank reads and packs all of them: the order depends on the seed and the
// global batch only); rank r runs micro-batches m with m % N == r, seeded by
// the global m, with seed_scale 1 / the counted tokens of all of them. The
// backend sums the gradients over the ranks; the loop sums the loss and the
// eval sums (rank r evaluates batches i % N == r) and a stop flag each step,
// so every rank stops after the same step. Only rank 0 logs and writes.
// Host C++ (g++ only: fmt and the JSON library); the CUDA backend arrives as a backend&.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "staticgrad/io/dataset.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/tokenizer.hpp"
#include "staticgrad/train/backend.hpp"
#include "staticgrad/train/batching.hpp"
#include "staticgrad/train/crash_hook.hpp"
#include "staticgrad/train/distributed.hpp"
#include "staticgrad/train/lora_init.hpp"
#include "staticgrad/train/metrics.hpp"
#include "staticgrad/train/schedule.hpp"
#include "staticgrad/train/train_options.hpp"
#include "staticgrad/train/training_checkpoint.hpp"

// Where the loop's code is compiled. Header-only use (no macro): loop.hpp
// includes the definitions (loop_impl.hpp, loop_checkpoint_impl.hpp) and they
// are inline. The project's own build compiles them once, in src/train's
// staticgrad_training_loop, whose users get STATICGRAD_PRECOMPILED_TRAINING_LOOP
// and see only these declarations (the loop at -O3 in every TU that ran it
// kept test_trainer.cpp and test_distributed_loop.cpp over 30 s).
#ifdef STATICGRAD_PRECOMPILED_TRAINING_LOOP
#define STATICGRAD_LOOP_INLINE
#else
#define STATICGRAD_LOOP_INLINE inline
#endif

namespace staticgrad::train {

// --out must be a directory this process can write: created if missing, then
// probed with a temporary file (a read-only parent, a regular file, /proc all fail here).
STATICGRAD_LOOP_INLINE void check_out_dir(const std::filesystem::path& out);

// The plain progress line (without a terminal, or with --log-every).
STATICGRAD_LOOP_INLINE std::string format_step(const step_record& r, std::int64_t total);

class training_loop {
 public:
  // `b`, `tok` and `comm` must outlive the loop. `files`: JSONL training data.
  // comm: the data-parallel group this process is one rank of (nullptr: alone).
  training_loop(backend& b, const io::tokenizer& tok, std::vector<std::string> files, train_options o,
                communicator* comm = nullptr);

  std::int64_t rows() const { return std::max<std::int64_t>(1, o_.batch_tokens / o_.max_len); }
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int world() const { return comm_ ? comm_->world() : 1; }
  // Micro-batches of one optimizer step over all ranks.
  std::int64_t global_micro_batches() const { return o_.grad_accum * world(); }
  // Valid after run() started: the steps of the whole run (from --steps or --epochs).
  std::int64_t total_steps() const { return total_; }
  const io::lora_adapter& adapter() const { return adapter_; }  // as of the last save / the end

  train_result run();

 private:
  void log_line(const std::string& s);
  void report(const step_record& r);

  // SIGINT / SIGTERM on this rank, or (with a group) on any: the largest signal number, 0 if none.
  int stop_requested();

  // One optimizer step: grad_accum micro-batches per rank (this rank's share
  // of the global batch), the backend's update.
  step_record step();
  io::data_options loader_options(std::uint64_t seed, bool shuffle) const;
  void open_loader(std::int64_t epoch);
  token_batch next_batch();

  // --epochs: one counting pass over the data (tokenizes it once).
  std::int64_t steps_for_epochs();

  // --eval-data, read and packed once before training (a bad line fails now, not at the first eval).
  void load_eval_data();
  double evaluate(std::int64_t step);

  // Records an eval; a new best keeps its adapter (in memory, and in
  // OUT/best_adapter when writing). Returns true when early stopping ends the run.
  bool note_eval(double loss, std::int64_t step);

  // The best eval's adapter: kept since it was found, or (a resumed run) read from OUT/best_adapter.
  io::lora_adapter best_adapter();

  // What a resumed run must repeat, by flag name.
  nlohmann::json fingerprint(std::int64_t warmup) const;
  void resume();
  std::filesystem::path save_checkpoint();
  void write_final_adapter();
  void write_page();

  backend& b_;
  const io::tokenizer& tok_;
  std::vector<std::string> files_;
  train_options o_;
  communicator* comm_ = nullptr;
  lr_schedule sched_;
  io::lora_adapter adapter_;
  std::optional<io::lora_adapter> best_;  // the best eval's adapter, once this process has seen it
  std::unique_ptr<io::data_loader> loader_;
  std::vector<token_batch> eval_;
  std::vector<step_record> history_;  // every step of the run (resumed: read back from metrics.jsonl)
  trainer_state state_;
  std::int64_t total_ = 0, first_step_ = 0;
  double last_eval_ = std::numeric_limits<double>::quiet_NaN();
  bool live_ = false;
  std::chrono::steady_clock::time_point t_start_;  // since state_.elapsed_s was last brought up to date
  std::chrono::steady_clock::time_point t_run_;    // this process's first step (the ETA)
};

}  // namespace staticgrad::train

#ifndef STATICGRAD_PRECOMPILED_TRAINING_LOOP
#include "staticgrad/train/loop_checkpoint_impl.hpp"
#include "staticgrad/train/loop_impl.hpp"
#endif
