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

namespace staticgrad::train {

// --out must be a directory this process can write: created if missing, then
// probed with a temporary file (a read-only parent, a regular file, /proc all fail here).
inline void check_out_dir(const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require(!fs::exists(out, ec) || fs::is_directory(out, ec), "exists and is not a directory", {out.string(), "--out", {}});
  fs::create_directories(out, ec);
  require(!ec, "cannot create the output directory: " + ec.message(), {out.string(), "--out", {}});
  std::string probe = (out / ".staticgrad-write-test-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  require(fd >= 0, std::string("the output directory is not writable: ") + std::strerror(errno), {out.string(), "--out", {}});
  ::close(fd);
  ::unlink(probe.c_str());
}

namespace loop_detail {
inline std::atomic<int>& stop_signal() {
  static std::atomic<int> s{0};
  return s;
}
extern "C" inline void on_stop_signal(int sig) { stop_signal().store(sig); }

// SIGINT and SIGTERM set a flag the loop checks between steps (scoped to run()).
class signal_scope {
 public:
  signal_scope() {
    stop_signal().store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~signal_scope() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  signal_scope(const signal_scope&) = delete;
  signal_scope& operator=(const signal_scope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

inline std::string bytes_text(std::uint64_t b) {
  return b >= (1ull << 30) ? fmt::format("{:.2f} GiB", double(b) / double(1ull << 30))
                           : fmt::format("{:.0f} MiB", double(b) / double(1ull << 20));
}
inline std::string duration_text(double s) {
  const auto t = static_cast<long long>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60) : fmt::format("{}:{:02}", t / 60, t % 60);
}
}  // namespace loop_detail

// The plain progress line (without a terminal, or with --log-every).
inline std::string format_step(const step_record& r, std::int64_t total) {
  const int w = static_cast<int>(std::to_string(total).size());
  return fmt::format("step {:>{}}/{}  loss {:.4f}  tokens {}  lr {:.3e}  grad_norm {:.3f}  tok/s {:.0f}  elapsed {:.1f}s"
                     "  epoch {}  mem {}",
                     r.step, w, total, r.loss, r.tokens, r.lr, r.grad_norm, r.tokens_per_s, r.elapsed_s, r.epoch,
                     loop_detail::bytes_text(r.memory_bytes));
}

class training_loop {
 public:
  // `b`, `tok` and `comm` must outlive the loop. `files`: JSONL training data.
  // comm: the data-parallel group this process is one rank of (nullptr: alone).
  training_loop(backend& b, const io::tokenizer& tok, std::vector<std::string> files, train_options o,
                communicator* comm = nullptr)
      : b_(b), tok_(tok), files_(std::move(files)), o_(std::move(o)), comm_(comm) {
    require(!files_.empty(), "no training data files", {"", "--data", {}});
    if (rank() != 0) o_.log = nullptr;  // rank 0 reports for the group
    check_options(o_, &b_.config());
    require(o_.lora.lora_dropout == 0 || b_.features().lora_dropout,
            std::string("--lora-dropout > 0 is not implemented on ") + b_.features().device +
                " (use --device cpu, or --lora-dropout 0)",
            {"", "--lora-dropout", {}});
    require(b_.max_batch_tokens() == 0 || rows() * o_.max_len <= b_.max_batch_tokens(),
            "the device was built for fewer tokens per batch than rows x --max-len", {"", "--batch-tokens", {}});
  }

  std::int64_t rows() const { return std::max<std::int64_t>(1, o_.batch_tokens / o_.max_len); }
  int rank() const { return comm_ ? comm_->rank() : 0; }
  int world() const { return comm_ ? comm_->world() : 1; }
  // Micro-batches of one optimizer step over all ranks.
  std::int64_t global_micro_batches() const { return o_.grad_accum * world(); }
  // Valid after run() started: the steps of the whole run (from --steps or --epochs).
  std::int64_t total_steps() const { return total_; }
  const io::lora_adapter& adapter() const { return adapter_; }  // as of the last save / the end

  train_result run() {
    loop_detail::signal_scope signals;
    train_result res;
    const bool writes = !o_.out.empty() && rank() == 0;
    if (writes) {
      check_out_dir(o_.out);
      sweep_stale_temporaries(o_.out);
    }
    load_eval_data();
    total_ = o_.epochs > 0 ? steps_for_epochs() : o_.steps;
    const std::int64_t warmup =
        o_.warmup_steps > 0 ? o_.warmup_steps : std::int64_t(std::ceil(o_.warmup_ratio * double(total_)));
    sched_ = {o_.schedule, o_.optim.lr, warmup, total_, o_.min_lr_ratio * o_.optim.lr};
    state_.total_steps = total_;
    state_.options = fingerprint(warmup);
    adapter_ = io::make_lora_adapter(o_.lora, b_.config());
    init_lora(adapter_, b_.config(), o_.seed);
    b_.set_adapter(adapter_);
    if (!o_.resume.empty()) resume();
    const std::int64_t taken = state_.epoch_batches;
    open_loader(state_.epoch);
    for (io::batch skip; state_.epoch_batches < taken; ++state_.epoch_batches)  // replay the data position
      require(loader_->next(skip), "the training data changed: the checkpoint's position is past its end",
              {files_.front(), "--resume", {}});
    if (writes) write_metrics(o_.out / "metrics.jsonl", history_);
    live_ = o_.log == &std::cout && o_.log_every == 0 && ::isatty(STDOUT_FILENO);
    t_start_ = t_run_ = std::chrono::steady_clock::now();
    first_step_ = state_.step;
    bool evaluated_last = false;
    while (state_.step < total_) {
      if (const int sig = stop_requested()) {
        res.stopped_by_signal = sig;
        break;
      }
      auto rec = step();
      crash_point("step", rec.step);
      evaluated_last = false;
      if (o_.eval_every > 0 && rec.step % o_.eval_every == 0) {
        rec.eval_loss = evaluate(rec.step);
        evaluated_last = true;
        res.early_stopped = note_eval(rec.eval_loss, rec.step);
      }
      history_.push_back(rec);
      res.steps.push_back(rec);
      if (writes) append_metrics(o_.out / "metrics.jsonl", rec), crash_point("metrics", rec.step);
      report(rec);
      if (writes && o_.save_every > 0 && rec.step % o_.save_every == 0 && rec.step < total_) save_checkpoint();
      if (res.early_stopped) {
        log_line(fmt::format("early stopping: no new best eval loss in {} evaluations (best {:.4f})",
                             state_.evals_without_improvement, state_.best_eval));
        break;
      }
    }
    if (live_ && !res.steps.empty()) *o_.log << std::endl;
    res.epochs = state_.epoch + 1;
    res.data = loader_->stats();
    if (res.stopped_by_signal) {
      if (writes && state_.step > 0) {
        const auto dir = save_checkpoint();
        log_line(fmt::format("stopped by signal {} after step {}: saved {} (continue with --resume {})",
                             res.stopped_by_signal, state_.step, dir.string(), o_.out.string()));
      }
      return res;
    }
    if (!eval_.empty() && !evaluated_last && state_.step > first_step_) {
      res.final_eval_loss = evaluate(state_.step);
      note_eval(res.final_eval_loss, state_.step);
      history_.back().eval_loss = res.final_eval_loss;
      res.steps.back().eval_loss = res.final_eval_loss;
      if (writes) write_metrics(o_.out / "metrics.jsonl", history_);
    } else if (!history_.empty()) {
      res.final_eval_loss = history_.back().eval_loss;
    }
    adapter_ = b_.adapter();
    if (o_.early_stopping_patience > 0 && state_.best_step > 0 && state_.best_step != state_.step) {
      // As transformers' EarlyStoppingCallback with load_best_model_at_end: the adapter of the best eval.
      adapter_ = best_adapter();
      log_line(fmt::format("the adapter written is the best eval's: step {}, eval loss {:.4f} (the last step's "
                           "was {})", state_.best_step, state_.best_eval, state_.step));
    }
    if (writes) {
      write_final_adapter();
      write_page();
    }
    return res;
  }

 private:
  void log_line(const std::string& s) {
    if (o_.log) *o_.log << (live_ ? "\r\033[K" : "") << s << std::endl;
  }

  void report(const step_record& r) {
    if (!o_.log) return;
    if (!live_) {
      const std::int64_t every = o_.log_every > 0 ? o_.log_every : 1;
      if (r.step % every == 0 || r.step == total_) *o_.log << format_step(r, total_) << std::endl;
      return;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run_).count();
    const double eta = secs / double(r.step - first_step_) * double(total_ - r.step);
    const auto ev = std::isnan(last_eval_) ? std::string("-") : fmt::format("{:.4f}", last_eval_);
    *o_.log << fmt::format("\r\033[Kstep {}/{}  epoch {}  loss {:.4f}  eval {}  {:.0f} tok/s  ETA {}  mem {}", r.step,
                           total_, r.epoch, r.loss, ev, r.tokens_per_s, loop_detail::duration_text(eta),
                           loop_detail::bytes_text(r.memory_bytes))
            << std::flush;
  }

  // SIGINT / SIGTERM on this rank, or (with a group) on any: the largest signal number, 0 if none.
  int stop_requested() {
    double sig = loop_detail::stop_signal().load();
    if (comm_) comm_->all_reduce_host({&sig, 1}, reduce_op::max, "the stop flag");
    return static_cast<int>(sig);
  }

  // One optimizer step: grad_accum micro-batches per rank (this rank's share
  // of the global batch), the backend's update.
  step_record step() {
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t s = state_.step + 1;
    std::vector<token_batch> micro;
    std::vector<std::uint64_t> seeds;
    std::int64_t counted = 0, tokens = 0;
    for (std::int64_t m = 0; m < global_micro_batches(); ++m) {
      auto b = next_batch();
      counted += b.counted;
      tokens += b.tokens();
      if (!runs_micro_batch(m, rank(), world())) continue;
      micro.push_back(std::move(b));
      seeds.push_back(mix_seed(mix_seed(o_.seed, std::uint64_t(s)), std::uint64_t(m)));
    }
    step_record rec;
    rec.step = s;
    rec.epoch = state_.epoch + 1;
    rec.lr = sched_.at(std::min(s, total_));
    auto out = b_.train_step({micro, seeds, 1.0 / double(counted), rec.lr, comm_});
    if (comm_) comm_->all_reduce_host({&out.loss_sum, 1}, reduce_op::sum, "the step's loss sum");
    rec.loss = out.loss_sum / double(counted);
    rec.grad_norm = out.grad_norm;
    if (!std::isfinite(rec.loss) || !std::isfinite(rec.grad_norm)) {
      const std::string where = b_.first_non_finite();
      throw error(fmt::format("step {}: the loss is {} and the gradient norm {}; {}. Nothing of this step was saved; "
                              "a lower --lr, a --max-grad-norm, or the data of this step (epoch {}) may be at fault",
                              s, rec.loss, rec.grad_norm,
                              where.empty() ? "every LoRA gradient and value is finite (the forward pass overflowed)"
                                            : "the first non-finite tensor (in backward order) is " + where,
                              rec.epoch),
                  {"", "step " + std::to_string(s), {}});
    }
    state_.step = s;
    rec.tokens = tokens;
    rec.counted = counted;
    state_.tokens_total += tokens;
    rec.tokens_total = state_.tokens_total;
    const auto t1 = std::chrono::steady_clock::now();
    rec.tokens_per_s = double(tokens) / std::max(1e-9, std::chrono::duration<double>(t1 - t0).count());
    rec.elapsed_s = state_.elapsed_s + std::chrono::duration<double>(t1 - t_start_).count();
    rec.memory_bytes = b_.memory_bytes();
    return rec;
  }

  io::data_options loader_options(std::uint64_t seed, bool shuffle) const {
    io::data_options d;
    d.max_len = std::size_t(o_.max_len);
    d.rows = std::size_t(rows());
    d.layout = io::row_layout::pack;
    d.seed = seed;
    d.shuffle_buffer = shuffle ? o_.shuffle_buffer : 0;
    d.skip_bad_lines = o_.skip_bad_lines;
    d.overflow = o_.drop_long ? io::overflow_policy::drop : io::overflow_policy::truncate;
    d.split_long_text = !o_.truncate_text;
    return d;
  }

  void open_loader(std::int64_t epoch) {
    loader_ = std::make_unique<io::data_loader>(files_, tok_, loader_options(mix_seed(o_.seed, std::uint64_t(epoch)), true));
    state_.epoch = epoch;
    state_.epoch_batches = 0;
  }

  token_batch next_batch() {
    io::batch b;
    bool fresh = false;
    for (;;) {
      if (loader_->next(b)) {
        ++state_.epoch_batches;
        auto p = pack_loader_batch(b, b_.config().vocab_size, files_.front());
        if (p.counted > 0) return p;
        continue;  // cannot happen with the loader's filtering; kept as a guard
      }
      require(!fresh, "the training data has no example with a token to train on", {files_.front(), "", {}});
      open_loader(state_.epoch + 1);
      fresh = true;
    }
  }

  // --epochs: one counting pass over the data (tokenizes it once).
  std::int64_t steps_for_epochs() {
    io::data_loader l(files_, tok_, loader_options(mix_seed(o_.seed, 0), true));
    io::batch b;
    std::int64_t n = 0;
    while (l.next(b)) n += pack_loader_batch(b, b_.config().vocab_size, files_.front()).counted > 0;
    require(n > 0, "the training data has no example with a token to train on", {files_.front(), "", {}});
    return std::max<std::int64_t>(1, std::int64_t(std::ceil(o_.epochs * double(n) / double(global_micro_batches()))));
  }

  // --eval-data, read and packed once before training (a bad line fails now, not at the first eval).
  void load_eval_data() {
    if (o_.eval_files.empty()) return;
    io::data_loader l(o_.eval_files, tok_, loader_options(0, false));
    io::batch b;
    std::int64_t counted = 0;
    while (l.next(b)) {
      auto p = pack_loader_batch(b, b_.config().vocab_size, o_.eval_files.front());
      counted += p.counted;
      if (p.counted > 0) eval_.push_back(std::move(p));
    }
    require(counted > 0, "the evaluation data has no token to evaluate", {o_.eval_files.front(), "--eval-data", {}});
  }

  double evaluate(std::int64_t step) {
    double sum = 0;
    std::int64_t counted = 0;
    for (std::size_t i = 0; i < eval_.size(); ++i) {
      if (runs_micro_batch(std::int64_t(i), rank(), world())) sum += b_.eval_loss_sum(eval_[i]);
      counted += eval_[i].counted;
    }
    if (comm_) comm_->all_reduce_host({&sum, 1}, reduce_op::sum, "the eval loss sum");
    last_eval_ = sum / double(counted);
    require(std::isfinite(last_eval_), "the eval loss is not finite at step " + std::to_string(step),
            {o_.eval_files.front(), "--eval-data", {}});
    if (o_.log && !live_)
      *o_.log << fmt::format("eval step {}/{}  eval_loss {:.4f}  tokens {}", step, total_, last_eval_, counted) << std::endl;
    return last_eval_;
  }

  // Records an eval; a new best keeps its adapter (in memory, and in
  // OUT/best_adapter when writing). Returns true when early stopping ends the run.
  bool note_eval(double loss, std::int64_t step) {
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

  // The best eval's adapter: kept since it was found, or (a resumed run) read from OUT/best_adapter.
  io::lora_adapter best_adapter() {
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

  // What a resumed run must repeat, by flag name.
  nlohmann::json fingerprint(std::int64_t warmup) const {
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

  void resume() {
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

  std::filesystem::path save_checkpoint() {
    state_.elapsed_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start_).count();
    t_start_ = std::chrono::steady_clock::now();
    adapter_ = b_.adapter();
    const auto dir = write_checkpoint(o_.out, adapter_, b_.config(), b_.optimizer(), state_);
    if (o_.save_total_limit > 0) prune_checkpoints(o_.out, o_.save_total_limit);
    write_page();
    return dir;
  }

  void write_final_adapter() { io::write_peft_adapter(o_.out, adapter_, b_.config()); }

  void write_page() {
    std::string title = "staticgrad finetune: " + o_.out.filename().string();
    io::write_text_atomic(o_.out / "training.html", training_html(history_, title));
  }

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
